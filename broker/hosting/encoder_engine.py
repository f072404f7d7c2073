"""The encoder engine (transformers on PyTorch, the `serve` extra): sentence embeddings.

A version is an encoder when its folder is a sentence-transformers one: `modules.json` lists a
`Transformer` module (the folder's `config.json` and weights), a `Pooling` module (its folder's
`config.json` says how token vectors become one: mean over the real tokens, the [CLS] token, the
maximum, or the mean times the square root of the length) and optionally `Normalize` (L2 to
length 1), in that order. all-MiniLM-L6-v2 is mean pooling then normalisation. Texts longer
than `max_seq_length` (`sentence_bert_config.json`, else the model's positions) are truncated,
as sentence-transformers does. Built from bytes only, as the causal engine: nothing on disk.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import safetensors.torch
import tokenizers
import torch
import transformers

from broker.errors import ConfigError
from broker.hosting.engine import Embeddings, Generation, Message, Sampling, not_a_generator

POOLINGS = {
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len",
}
BATCH = 32  # texts per forward pass: bounds the padded batch's memory
IGNORED = ("embeddings.position_ids",)  # a buffer older files carry; the model makes its own


class EncoderEngine:
    task = "embed"

    def __init__(self, model: Any, tokenizer: tokenizers.Tokenizer, pooling: str,
                 normalize: bool) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.pooling, self.normalize = pooling, normalize
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model.to(self.device)
        self._lock = threading.Lock()  # one batch at a time: the model is not reentrant

    @classmethod
    def from_files(cls, files: Mapping[str, bytes]) -> EncoderEngine:
        pooling, normalize = pooling_of(files)
        for needed in ("config.json", "tokenizer.json"):
            if needed not in files:
                raise ConfigError(
                    f"the version has no {needed}, so the encoder engine cannot load it",
                    hint="host a version deposited as a sentence-transformers model folder",
                )
        config = transformers.AutoConfig.for_model(**json.loads(files["config.json"]))
        model = transformers.AutoModel.from_config(config)
        state: dict[str, Any] = {}
        for path in sorted(p for p in files if p.endswith(".safetensors") and "/" not in p):
            state.update(safetensors.torch.load(files[path]))
        if not state:
            raise ConfigError("the version has no .safetensors file",
                              hint="deposit the weights as safetensors")
        state = {k: v for k, v in state.items() if k not in IGNORED}
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [m for m in missing if not m.startswith("pooler.")]  # unused by pooling
        if unexpected or missing:
            raise ConfigError(
                f"the weights do not fit config.json (missing {missing[:3]}, unexpected "
                f"{unexpected[:3]})",
                hint="deposit the model's own config.json with its weights",
            )
        model.eval()
        limit = _max_length(files, config)
        tokenizer = tokenizers.Tokenizer.from_str(files["tokenizer.json"].decode("utf-8"))
        tokenizer.no_padding()  # the file may pad every text to a fixed length; we pad a batch
        tokenizer.enable_truncation(limit)
        tokenizer.enable_padding(pad_id=int(getattr(config, "pad_token_id", 0) or 0))
        return cls(model, tokenizer, pooling, normalize)

    def generate(self, prompt: str, sampling: Sampling) -> Generation:
        raise not_a_generator("this model")

    def chat_prompt(self, messages: Sequence[Message]) -> str:
        raise not_a_generator("this model")

    def embed(self, texts: Sequence[str]) -> Embeddings:
        vectors: list[list[float]] = []
        tokens = 0
        with self._lock, torch.no_grad():
            for start in range(0, len(texts), BATCH):
                encoded = self.tokenizer.encode_batch(list(texts[start:start + BATCH]))
                mask = torch.tensor([e.attention_mask for e in encoded], device=self.device)
                hidden = self.model(
                    input_ids=torch.tensor([e.ids for e in encoded], device=self.device),
                    attention_mask=mask,
                    token_type_ids=torch.tensor([e.type_ids for e in encoded],
                                                device=self.device),
                ).last_hidden_state
                pooled = pool(hidden, mask, self.pooling)
                if self.normalize:
                    pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
                vectors.extend(pooled.float().cpu().tolist())
                tokens += int(mask.sum().item())
        return Embeddings(vectors, tokens)


def pool(hidden: Any, mask: Any, how: str) -> Any:
    """One vector per text from its token vectors; padding never counts."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    if how == "cls":
        return hidden[:, 0]
    if how == "max":
        return hidden.masked_fill(weights == 0, float("-inf")).max(dim=1).values
    summed = (hidden * weights).sum(dim=1)
    counts = weights.sum(dim=1).clamp(min=1e-9)
    return summed / (counts.sqrt() if how == "mean_sqrt_len" else counts)


def pooling_of(files: Mapping[str, bytes]) -> tuple[str, bool]:
    """(pooling, normalise) from `modules.json` and the Pooling module's `config.json`."""
    try:
        modules = json.loads(files["modules.json"])
        kinds = {str(m["type"]).rsplit(".", 1)[-1]: str(m.get("path", "")) for m in modules}
    except (ValueError, KeyError, TypeError):
        raise ConfigError(
            "the version's modules.json is not a sentence-transformers list",
            hint="deposit the model folder as sentence-transformers saves it",
        ) from None
    known = {"Transformer", "Pooling", "Normalize"}
    if "Transformer" not in kinds or "Pooling" not in kinds or set(kinds) - known:
        raise ConfigError(
            f"modules.json lists {sorted(kinds)}; the encoder engine runs Transformer, Pooling "
            "and optionally Normalize",
            hint="host a sentence-transformers model of those modules (e.g. all-MiniLM-L6-v2)",
        )
    where = f"{kinds['Pooling']}/config.json".lstrip("/")
    settings = json.loads(files[where]) if where in files else {"pooling_mode_mean_tokens": True}
    chosen = [name for key, name in POOLINGS.items() if settings.get(key)]
    if len(chosen) != 1:
        raise ConfigError(
            f"{where} asks for pooling {chosen or 'none'}; the engine does exactly one of "
            f"{sorted(POOLINGS.values())}",
            hint="host a model with a single pooling mode",
        )
    return chosen[0], "Normalize" in kinds


def _max_length(files: Mapping[str, bytes], config: Any) -> int:
    positions = int(getattr(config, "max_position_embeddings", 0) or 512)
    if "sentence_bert_config.json" in files:
        wanted = json.loads(files["sentence_bert_config.json"]).get("max_seq_length")
        if isinstance(wanted, int) and 0 < wanted <= positions:
            return wanted
    return positions
