"""The Hugging Face transformers engine (PyTorch, CPU or GPU): the `serve` extra.

Built from bytes only: the model from `config.json` and the `*.safetensors` files
(`safetensors.torch.load(bytes)`), the tokenizer from `tokenizer.json` text
(`tokenizers.Tokenizer.from_str`), and its chat template, if any, from `tokenizer_config.json`.
Nothing is written to disk. Generation is our own token loop over the model's KV cache rather
than `model.generate`: it streams piece by piece, applies stop strings exactly, and a seeded
sampler gives the same text for the same seed.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import safetensors.torch
import tokenizers
import torch
import transformers

from broker.errors import ConfigError, InvalidInput
from broker.hosting.engine import (
    Embeddings,
    Generation,
    LayerViews,
    Message,
    Sampling,
    TokenLogprob,
    Views,
    check_views,
    not_an_encoder,
    plain_chat_prompt,
)

PIECE_CONTEXT = 4  # tokens decoded before a token to name the text it adds


class TransformersEngine:
    task = "generate"

    def __init__(self, model: Any, tokenizer: Any, context: int) -> None:
        self.model, self.tokenizer, self.context = model, tokenizer, context
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model.to(self.device)
        self._lock = threading.Lock()  # one generation at a time: the model is not reentrant

    @classmethod
    def from_files(cls, files: Mapping[str, bytes]) -> TransformersEngine:
        for needed in ("config.json", "tokenizer.json"):
            if needed not in files:
                raise ConfigError(
                    f"the version has no {needed}, so the transformers engine cannot load it",
                    hint="host a version deposited as a Hugging Face model folder",
                )
        weights = sorted(p for p in files if p.endswith(".safetensors"))
        if not weights:
            raise ConfigError(
                "the version has no .safetensors file", hint="deposit the weights as safetensors"
            )
        settings = json.loads(files["config.json"])
        config = transformers.AutoConfig.for_model(**settings)
        model = transformers.AutoModelForCausalLM.from_config(config)
        state: dict[str, Any] = {}
        for path in weights:
            state.update(safetensors.torch.load(files[path]))
        missing, unexpected = model.load_state_dict(state, strict=False)
        model.tie_weights()  # a tied output layer is not in the file (missing above)
        if unexpected or [m for m in missing if not _tied(model, m)]:
            raise ConfigError(
                f"the weights do not fit config.json (missing {missing[:3]}, unexpected "
                f"{unexpected[:3]})",
                hint="deposit the model's own config.json with its weights",
            )
        model.eval()
        tokenizer = _tokenizer(files)
        context = int(getattr(config, "max_position_embeddings", 0) or 1024)
        return cls(model, tokenizer, context)

    def chat_prompt(self, messages: Sequence[Message]) -> str:
        if getattr(self.tokenizer, "chat_template", None):
            text = self.tokenizer.apply_chat_template(
                [{"role": m.role, "content": m.content} for m in messages],
                tokenize=False,
                add_generation_prompt=True,
            )
            return str(text)
        return plain_chat_prompt(messages)

    def embed(self, texts: Sequence[str]) -> Embeddings:
        raise not_an_encoder("this model")

    def generate(self, prompt: str, sampling: Sampling) -> Generation:
        ids = list(self.tokenizer.encode(prompt, add_special_tokens=False))
        if not ids:
            raise InvalidInput("the prompt is empty", hint="send some text to continue")
        if len(ids) + sampling.max_tokens > self.context:
            raise InvalidInput(
                f"the prompt ({len(ids)} tokens) and max_tokens ({sampling.max_tokens}) exceed "
                f"the model's context of {self.context} tokens",
                hint="shorten the prompt or ask for fewer tokens",
            )
        if sampling.views is not None:
            config = self.model.config
            check_views(sampling.views, int(config.num_hidden_layers),
                        int(config.num_attention_heads), int(config.hidden_size),
                        len(ids) + sampling.max_tokens)
        generation = Generation(iter(()), prompt_tokens=len(ids))
        generation.pieces = self._pieces(ids, sampling, generation)
        return generation

    def _pieces(self, ids: list[int], sampling: Sampling, out: Generation) -> Iterator[str]:
        with self._lock, torch.no_grad():
            generator = None
            if sampling.seed is not None:
                generator = torch.Generator(device=self.device).manual_seed(sampling.seed)
            produced: list[int] = []
            sent = ""
            hold = max((len(s) for s in sampling.stop), default=1) - 1
            past, step = None, ids
            eos = self.tokenizer.eos_token_id
            for _ in range(sampling.max_tokens):
                tensor = torch.tensor([step], device=self.device)
                result = self.model(input_ids=tensor, cache=past, use_cache=True)
                past = _cache_of(result)
                logits = result.logits[0, -1]
                token = _pick(logits, sampling, generator)
                if eos is not None and token == eos:
                    out.finish_reason = "stop"
                    break
                if sampling.logprobs is not None:
                    out.tokens.append(self._view(logits, produced, token, sampling.logprobs))
                produced.append(token)
                out.completion_tokens = len(produced)
                text = self.tokenizer.decode(produced, skip_special_tokens=True)
                cut = _stop_at(text, sampling.stop)
                if cut is not None:
                    out.finish_reason = "stop"
                    if sampling.views is not None:
                        out.views = self._layer_views([*ids, *produced], sampling.views)
                    if text[:cut][len(sent):]:
                        yield text[:cut][len(sent):]
                    return
                ready = len(text) - hold
                if text.endswith("\ufffd"):  # half a character: wait for the rest
                    ready = min(ready, len(text) - 1)
                if ready > len(sent):
                    yield text[len(sent):ready]
                    sent = text[:ready]
                step = [token]
            if sampling.views is not None:
                out.views = self._layer_views([*ids, *produced], sampling.views)
            text = self.tokenizer.decode(produced, skip_special_tokens=True)
            if text[len(sent):]:
                yield text[len(sent):]

    def _layer_views(self, ids: list[int], views: Views) -> LayerViews:
        """Hidden states and attention of the named layers over `ids` (the prompt and the
        completion's tokens), by one forward pass over them all, as transformers gives them:
        layer L's hidden states are `hidden_states[L]` (0: the embeddings), its attention
        `attentions[L - 1]`. Attention weights need the eager implementation (sdpa gives none),
        set for this pass only (the lock is held: no generation runs meanwhile)."""
        tensor = torch.tensor([ids], device=self.device)
        usual = self.model.config._attn_implementation
        if views.attention and usual != "eager":
            self.model.set_attn_implementation("eager")
        try:
            result = self.model(input_ids=tensor, use_cache=False,
                                output_hidden_states=bool(views.hidden_states),
                                output_attentions=bool(views.attention))
        finally:
            if self.model.config._attn_implementation != usual:
                self.model.set_attn_implementation(usual)
        hidden = {n: result.hidden_states[n][0].float().tolist() for n in views.hidden_states}
        attention = {
            n: [[row[:i + 1] for i, row in enumerate(head)]
                for head in result.attentions[n - 1][0].float().tolist()]
            for n in views.attention}
        names = [str(t) for t in self.tokenizer.convert_ids_to_tokens(ids)]
        return LayerViews(list(ids), names, hidden, attention)

    def _view(self, logits: Any, before: list[int], token: int, top: int) -> TokenLogprob:
        """The research view of one chosen token: log_softmax of the model's own logits (not
        tempered, not cut by top_p), and the `top` likeliest tokens; each named by the text it
        adds after the tokens `before` (so the views' texts join into the completion's)."""
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        best = torch.topk(logprobs, top) if top else None
        pairs = () if best is None else tuple(
            (self._piece(before, int(i)), float(v))
            for v, i in zip(best.values.tolist(), best.indices.tolist(), strict=True))
        return TokenLogprob(self._piece(before, token), float(logprobs[token]), pairs)

    def _piece(self, before: list[int], token: int) -> str:
        # A few tokens of context are enough for the decoder's spacing, and keep this linear.
        context = before[-PIECE_CONTEXT:]
        start = self.tokenizer.decode(context, skip_special_tokens=True)
        return str(self.tokenizer.decode([*context, token], skip_special_tokens=True))[
            len(start):]


def _pick(logits: Any, sampling: Sampling, generator: Any) -> int:
    if sampling.temperature == 0:
        return int(torch.argmax(logits).item())
    probs = torch.softmax(logits.float() / sampling.temperature, dim=-1)
    if sampling.top_p < 1:
        ordered, order = torch.sort(probs, descending=True)
        keep = torch.cumsum(ordered, dim=-1) - ordered < sampling.top_p
        probs = torch.zeros_like(probs).scatter(0, order[keep], ordered[keep])
    return int(torch.multinomial(probs, 1, generator=generator).item())


def _cache_of(result: Any) -> Any:
    """The KV cache a forward pass returns (transformers 5 renamed past_key_values: cache)."""
    found = getattr(result, "cache", None)
    return found if found is not None else getattr(result, "past_key_values", None)


def _stop_at(text: str, stops: tuple[str, ...]) -> int | None:
    found = [text.find(s) for s in stops if s in text]
    return min(found) if found else None


def _tied(model: Any, name: str) -> bool:
    """Whether a parameter missing from the file is the output layer tied to the embeddings."""
    tied = getattr(model, "_tied_weights_keys", None) or ()
    return name in tied or name.startswith("lm_head.")


def _tokenizer(files: Mapping[str, bytes]) -> Any:
    settings: dict[str, Any] = {}
    if "tokenizer_config.json" in files:
        raw = json.loads(files["tokenizer_config.json"])
        settings = {
            k: raw[k]
            for k in ("chat_template", "eos_token", "bos_token", "unk_token", "pad_token")
            if isinstance(raw.get(k), str)
        }
    core = tokenizers.Tokenizer.from_str(files["tokenizer.json"].decode("utf-8"))
    return transformers.PreTrainedTokenizerFast(tokenizer_object=core, **settings)
