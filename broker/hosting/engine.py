"""The engine interface: what a model worker needs of whatever runs the model. No torch here.

An engine is built from a version's files held in memory (`{path: bytes}`, never on disk) and
either generates text from a prompt, as a stream of text pieces, with the token counts at the
end (a causal language model), or embeds texts as vectors (an encoder model); asked for what
its model does not do, it answers BadRequest (an OpenAI-style 400) saying which it does. The
interface is the OpenAI completions vocabulary (max tokens, temperature, seed, stop), so that an
engine that is itself an OpenAI-compatible server (vLLM, for models that need several GPUs or
hosts) fits behind it later by forwarding. The first engine is Hugging Face transformers on
PyTorch (`transformers_engine`, the `serve` extra).

Layer views (hidden states and attention of named layers, an `internals` research view) are
the one thing outside OpenAI's vocabulary: asked as `Sampling.views` (the request's documented
extension field `escrow_views`, parsed by `views_of`), answered in `Generation.views` once the
generation is done, as JSON (`LayerViews.as_json`, the answer's `escrow_views`). A forwarding
engine passes `escrow_views` on to a server that answers it in the same shape, or refuses it
with a BadRequest (a 400 saying it gives no layer views).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from broker.errors import BadRequest, ConfigError, InvalidInput

MAX_TOKENS_LIMIT = 4096  # the most a single call may ask to generate
MAX_TOP_LOGPROBS = 20  # the most alternatives per token a research view lists (OpenAI's limit)
MAX_VIEW_LAYERS = 4  # the most layers one request may name, for hidden states and for attention
MAX_VIEW_TOKENS = 256  # layer views: the prompt's tokens and max_tokens together, at most
MAX_VIEW_NUMBERS = 1_000_000  # layer views: the most floats one answer may carry
VIEWS_FIELD = "escrow_views"  # the request's (and the answer's) extension field


@dataclass(frozen=True)
class Views:
    """The layers whose views a request asks for: layer 0 is the embeddings' output, layer L
    (1 to the model's layer count) is the output of the L-th block and that block's attention."""

    hidden_states: tuple[int, ...] = ()
    attention: tuple[int, ...] = ()


@dataclass(frozen=True)
class LayerViews:
    """The answer to `Views`, over every token the model read and wrote (prompt, then the
    completion's tokens): `hidden[L]` one vector per token; `attention[L]` per head, per token
    `i`, its weights over tokens 0..i (a causal model attends to nothing later)."""

    token_ids: list[int]
    tokens: list[str]
    hidden: dict[int, list[list[float]]]
    attention: dict[int, list[list[list[float]]]]

    def as_json(self) -> dict[str, object]:
        layers: dict[str, dict[str, object]] = {}
        for layer in sorted({*self.hidden, *self.attention}):
            entry: dict[str, object] = {}
            if layer in self.hidden:
                entry["hidden_states"] = self.hidden[layer]
            if layer in self.attention:
                entry["attention"] = self.attention[layer]
            layers[str(layer)] = entry
        return {"tokens": self.tokens, "token_ids": self.token_ids, "layers": layers}


@dataclass(frozen=True)
class Sampling:
    """How to pick each next token: greedy at temperature 0, else sampled (seeded if asked)."""

    max_tokens: int = 16
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    logprobs: int | None = None  # None: none; N: each token's logprob and the N likeliest
    views: Views | None = None  # layer views (hidden states, attention), answered at the end


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token's research view: its text, log-probability under the model (the
    log_softmax of its logits, before temperature) and the `top` likeliest (text, logprob)."""

    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()


@dataclass
class Generation:
    """One generation's stream: iterate it for text pieces; afterwards the counts are set."""

    pieces: Iterator[str]
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "length"  # "stop" (end of text or a stop string) or "length"
    tokens: list[TokenLogprob] = field(default_factory=list)  # if Sampling.logprobs is set
    views: LayerViews | None = None  # if Sampling.views is set: once the pieces are all read

    def __iter__(self) -> Iterator[str]:
        return self.pieces

    def text(self) -> str:
        return "".join(self.pieces)


@dataclass(frozen=True)
class Message:
    role: str
    content: str


@dataclass(frozen=True)
class Embeddings:
    """One vector per input text, in order, and the tokens read (padding not counted)."""

    vectors: list[list[float]]
    prompt_tokens: int


MAX_EMBED_INPUTS = 256  # the most texts one embeddings call may carry


class Engine(Protocol):
    """A loaded model. Its methods may be called from several threads: engines serialise."""

    task: str  # "generate" (completions, chat) or "embed" (embeddings)

    def generate(self, prompt: str, sampling: Sampling) -> Generation: ...

    def chat_prompt(self, messages: Sequence[Message]) -> str: ...

    def embed(self, texts: Sequence[str]) -> Embeddings: ...


def not_a_generator(what: str) -> BadRequest:
    return BadRequest(
        f"{what} is an embedding (encoder) model: it answers /v1/embeddings, not completions",
        hint="call embeddings.create with it, or query a text-generation model for completions",
    )


def not_an_encoder(what: str) -> BadRequest:
    return BadRequest(
        f"{what} is a text-generation model: it answers completions, not /v1/embeddings",
        hint="query an embedding model (a sentence-transformers folder) for embeddings",
    )


def embed_inputs(body: Mapping[str, object]) -> list[str]:
    """The texts of an OpenAI embeddings request: `input`, a string or a list of strings."""
    texts = body.get("input")
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, list) or not texts or not all(
        isinstance(t, str) and t for t in texts
    ):
        raise BadRequest(
            "'input' must be a non-empty string or a list of non-empty strings",
            hint='e.g. ["The escrow keeps", "the weights"] (token arrays are not accepted)',
        )
    if len(texts) > MAX_EMBED_INPUTS:
        raise BadRequest(
            f"'input' has {len(texts)} texts, more than {MAX_EMBED_INPUTS}",
            hint=f"send at most {MAX_EMBED_INPUTS} texts per call",
        )
    return [str(t) for t in texts]


def plain_chat_prompt(messages: Sequence[Message]) -> str:
    """The chat prompt of a model without a chat template: one "role: content" line per
    message, then "assistant:" for the model to go on (documented in the README)."""
    lines = [f"{m.role}: {m.content}" for m in messages]
    return "\n".join([*lines, "assistant:"])


def sampling_of(body: Mapping[str, object]) -> Sampling:
    """The sampling settings of an OpenAI request body, checked."""
    max_tokens = body.get("max_tokens", body.get("max_completion_tokens", 16))
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or not (
        1 <= max_tokens <= MAX_TOKENS_LIMIT
    ):
        raise InvalidInput(
            f"max_tokens {max_tokens!r} is not valid",
            hint=f"ask for 1 to {MAX_TOKENS_LIMIT} tokens",
        )
    temperature = body.get("temperature", 0.0)
    top_p = body.get("top_p", 1.0)
    if not isinstance(temperature, int | float) or not 0 <= temperature <= 2:
        raise InvalidInput("temperature must be a number from 0 to 2", hint="0: greedy")
    if not isinstance(top_p, int | float) or not 0 < top_p <= 1:
        raise InvalidInput("top_p must be a number above 0, at most 1", hint="1: no cut")
    seed = body.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise InvalidInput("seed must be an integer", hint="e.g. 42")
    stop = body.get("stop") or ()
    if isinstance(stop, str):
        stop = (stop,)
    if not isinstance(stop, list | tuple) or not all(isinstance(s, str) and s for s in stop):
        raise InvalidInput("stop must be a string or a list of strings", hint='e.g. ["\\n"]')
    return Sampling(int(max_tokens), float(temperature), float(top_p), seed, tuple(stop)[:4])


def with_logprobs(sampling: Sampling, body: Mapping[str, object], chat: bool) -> Sampling:
    """The research view a request asks for, checked: chat's `logprobs: true` with
    `top_logprobs: N`, or the legacy completions' `logprobs: N` (0 to 20 alternatives)."""
    if chat:
        wanted, top = body.get("logprobs"), body.get("top_logprobs")
        if wanted in (None, False) and top is None:
            return sampling
        if wanted is not True:
            raise BadRequest("top_logprobs needs logprobs: true", hint="add logprobs: true")
        count: object = 0 if top is None else top
    else:
        count = body.get("logprobs")
        if count is None:
            return sampling
    name = "top_logprobs" if chat else "logprobs"
    if not isinstance(count, int) or isinstance(count, bool) or not (
        0 <= count <= MAX_TOP_LOGPROBS
    ):
        raise BadRequest(f"{name} {count!r} is not valid",
                         hint=f"ask for 0 to {MAX_TOP_LOGPROBS} alternatives per token")
    return replace(sampling, logprobs=count)


def with_views(sampling: Sampling, body: Mapping[str, object]) -> Sampling:
    """The layer views a request asks for (`escrow_views: {"hidden_states": [layers],
    "attention": [layers]}`), checked for shape; the model's own range and the size caps are
    the engine's to check (`check_views`), as only it knows its layers and the prompt's tokens."""
    asked = body.get(VIEWS_FIELD)
    if asked is None:
        return sampling
    example = '{"hidden_states": [0, 2], "attention": [2]}'
    if not isinstance(asked, dict) or not asked or set(asked) - {"hidden_states", "attention"}:
        raise BadRequest(
            f"{VIEWS_FIELD} must be an object with hidden_states and/or attention, each a list "
            "of layer numbers", hint=f"e.g. {example}")
    found: dict[str, tuple[int, ...]] = {}
    for name in ("hidden_states", "attention"):
        layers = asked.get(name, [])
        if not isinstance(layers, list) or not all(
                isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in layers):
            raise BadRequest(f"{VIEWS_FIELD}.{name} must be a list of layer numbers (0 or more)",
                             hint=f"e.g. {example}")
        if len(set(layers)) > MAX_VIEW_LAYERS:
            raise BadRequest(
                f"{VIEWS_FIELD}.{name} names {len(set(layers))} layers, more than "
                f"{MAX_VIEW_LAYERS}", hint=f"name at most {MAX_VIEW_LAYERS} layers per request")
        found[name] = tuple(sorted(set(layers)))
    if not found["hidden_states"] and not found["attention"]:
        raise BadRequest(f"{VIEWS_FIELD} names no layer", hint=f"e.g. {example}")
    return replace(sampling, views=Views(found["hidden_states"], found["attention"]))


def check_views(views: Views, layers: int, heads: int, width: int, tokens: int) -> None:
    """A model of `layers` blocks, `heads` attention heads and vectors of `width` can answer
    `views` over at most `tokens` tokens (the prompt's and max_tokens) within the caps."""
    for name, named, lowest in (("hidden_states", views.hidden_states, 0),
                                ("attention", views.attention, 1)):
        wrong = [n for n in named if not lowest <= n <= layers]
        if wrong:
            first = "layer 0 is the embeddings, which have no attention; " if (
                0 in wrong and name == "attention") else ""
            raise BadRequest(
                f"{VIEWS_FIELD}.{name} names layer {wrong[0]}, but this model's {name} are of "
                f"layers {lowest} to {layers}",
                hint=f"{first}name layers {lowest} to {layers} (0: the embeddings, "
                f"{layers}: the last block)")
    if tokens > MAX_VIEW_TOKENS:
        raise BadRequest(
            f"layer views are given for at most {MAX_VIEW_TOKENS} tokens, and the prompt and "
            f"max_tokens make {tokens}", hint="shorten the prompt or ask for fewer tokens")
    numbers = (len(views.hidden_states) * tokens * width
               + len(views.attention) * heads * tokens * (tokens + 1) // 2)
    if numbers > MAX_VIEW_NUMBERS:
        raise BadRequest(
            f"these layer views of up to {tokens} tokens would be {numbers} numbers, more than "
            f"{MAX_VIEW_NUMBERS} per answer",
            hint="name fewer layers, shorten the prompt or ask for fewer tokens")


def load_engine(files: Mapping[str, bytes]) -> Engine:
    """The engine for a version's files: transformers (the `serve` extra), imported now; an
    encoder if the folder is a sentence-transformers one (`modules.json`), else a causal LM."""
    try:
        from broker.hosting.encoder_engine import EncoderEngine
        from broker.hosting.transformers_engine import TransformersEngine
    except ImportError as error:
        raise ConfigError(
            f"the serve extra is not installed ({error.name} is missing), so no model can be "
            "loaded here",
            hint="install it: pip install 'weights-escrow[serve]'",
        ) from None
    if "modules.json" in files:
        return EncoderEngine.from_files(files)
    return TransformersEngine.from_files(files)
