"""The model the demo deposits: a tiny generated "GPT" in the safetensors layout."""

from __future__ import annotations

import json
import math
import sys
from array import array
from pathlib import Path
from typing import Any


def _tensor(rows: int, cols: int, phase: float) -> bytes:
    values = array("f", (0.02 * math.sin(phase + i * 0.001) for i in range(rows * cols)))
    if sys.byteorder == "big":
        values.byteswap()  # safetensors data is little-endian
    return values.tobytes()


def write_safetensors(path: Path, tensors: dict[str, tuple[list[int], bytes]]) -> None:
    """The safetensors layout, by hand: an 8-byte little-endian header length, the JSON header
    (dtype, shape, data_offsets relative to the data), padded with spaces to 8 bytes, then the
    raw little-endian data of each tensor in order."""
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, (shape, data) in tensors.items():
        end = offset + len(data)
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, end]}
        offset += len(data)
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    with path.open("wb") as handle:
        handle.write(len(encoded).to_bytes(8, "little"))
        handle.write(encoded)
        for _shape, data in tensors.values():
            handle.write(data)


def generate_model(directory: Path) -> list[Path]:
    """A tiny 'GPT': two float32 tensors (3 MiB) and a config.json."""
    directory.mkdir(parents=True, exist_ok=True)
    weights = directory / "model.safetensors"
    write_safetensors(weights, {
        "transformer.wte.weight": ([1024, 512], _tensor(1024, 512, 0.0)),
        "lm_head.weight": ([512, 512], _tensor(512, 512, 1.0)),
    })
    config = directory / "config.json"
    config.write_text(json.dumps({
        "architectures": ["DemoGPT"], "model_type": "gpt2", "vocab_size": 1024,
        "n_embd": 512, "n_layer": 0, "torch_dtype": "float32",
    }, indent=2) + "\n", encoding="utf-8")
    return [config, weights]
