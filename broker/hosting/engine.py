"""The engine interface: what a model worker needs of whatever runs the model. No torch here.

An engine is built from a version's files held in memory (`{path: bytes}`, never on disk) and
either generates text from a prompt, as a stream of text pieces, with the token counts at the
end (a causal language model), or embeds texts as vectors (an encoder model); asked for what
its model does not do, it answers BadRequest (an OpenAI-style 400) saying which it does. The
interface is the OpenAI completions vocabulary (max tokens, temperature, seed, stop), so that an
engine that is itself an OpenAI-compatible server (vLLM, for models that need several GPUs or
hosts) fits behind it later by forwarding. The first engine is Hugging Face transformers on
PyTorch (`transformers_engine`, the `serve` extra).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from broker.errors import BadRequest, ConfigError, InvalidInput

MAX_TOKENS_LIMIT = 4096  # the most a single call may ask to generate
MAX_TOP_LOGPROBS = 20  # the most alternatives per token a research view lists (OpenAI's limit)


@dataclass(frozen=True)
class Sampling:
    """How to pick each next token: greedy at temperature 0, else sampled (seeded if asked)."""

    max_tokens: int = 16
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    logprobs: int | None = None  # None: none; N: each token's logprob and the N likeliest


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
