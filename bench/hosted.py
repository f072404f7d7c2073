"""Benchmark hosted access: the broker's OpenAI-compatible API against the engine in process.

    .venv/bin/python bench/hosted.py [--rounds 5] [--tokens 64] [--width 256] [--layers 4]

Starts a real broker, deposits and seals a random-weight GPT-2 (broker/hosting/tiny_model.py,
here `--width` wide and `--layers` deep), starts a real `escrow model-worker` hosting it, and
grants a person inference access (as tests/hosted does). Then, in interleaved rounds, for the
same prompts, greedy, `--tokens` tokens each:
- through the broker: the official `openai` client, `completions.create(stream=True)`;
- in process: the same engine (`load_engine` on the same files) iterated directly.
Per call: time to first token (the first non-empty text piece) and tokens per second (completion
tokens over the call's wall time). Prints the medians, the throughput ratio (goal ≥ 0.9) and the
time to first token added (goal < 20 ms at p50). Both sides run on one thread
(OMP_NUM_THREADS=1), one call at a time. Nothing fails: this prints figures.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests" / "hosted"), str(ROOT / "tests")]  # its conftest first

PROMPTS = [
    "The escrow keeps",
    "A researcher asks for access and",
    "Every key release is on the audit log",
    "The model worker decrypts into memory",
]


def timed(pieces: Callable[[], Iterable[str]]) -> tuple[float, float]:
    """(seconds to the first non-empty piece, seconds in all) of one streamed call."""
    start = time.perf_counter()
    first = None
    for piece in pieces():
        if piece and first is None:
            first = time.perf_counter() - start
    total = time.perf_counter() - start
    return (first if first is not None else total), total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    args = parser.parse_args()

    import openai
    import torch
    from conftest import MODEL, NAME, ask, hosting, make_person

    from broker.hosting.engine import Sampling, load_engine
    from broker.hosting.tiny_model import tiny_model_files

    torch.set_num_threads(1)
    files = tiny_model_files(width=args.width, layers=args.layers)
    with tempfile.TemporaryDirectory(prefix="bench-hosted-") as tmp:
        base = Path(tmp)
        folder = base / "model"
        folder.mkdir()
        for path, data in files.items():
            (folder / path).write_bytes(data)
        with hosting(base, MODEL, folder) as (broker, _worker):
            person = make_person(broker, "bench")
            ask(broker, person, "inference")
            client = openai.OpenAI(base_url=broker.url + "/v1", api_key=person.token,
                                   max_retries=0, timeout=120)
            engine = load_engine(files)
            sampling = Sampling(max_tokens=args.tokens)
            counts: dict[str, int] = {}

            def direct(prompt: str) -> Iterable[str]:
                generation = engine.generate(prompt, sampling)
                yield from generation
                counts[prompt] = generation.completion_tokens

            def hosted(prompt: str) -> Iterable[str]:
                stream = client.completions.create(model=NAME, prompt=prompt, stream=True,
                                                   max_tokens=args.tokens, temperature=0)
                for chunk in stream:
                    yield chunk.choices[0].text if chunk.choices else ""

            results: dict[str, list[tuple[float, float]]] = {"direct": [], "broker": []}
            for prompt in PROMPTS:  # warm-up: both paths, every prompt once
                timed(lambda p=prompt: direct(p))
                timed(lambda p=prompt: hosted(p))
            for round_ in range(args.rounds):
                order = ("direct", "broker") if round_ % 2 == 0 else ("broker", "direct")
                for prompt in PROMPTS:
                    for side in order:
                        run = direct if side == "direct" else hosted
                        first, total = timed(lambda p=prompt, r=run: r(p))
                        results[side].append((first, counts[prompt] / total))
            report(results, args, sum(counts.values()) / len(counts))


def report(results: dict[str, list[tuple[float, float]]], args: argparse.Namespace,
           tokens: float) -> None:
    medians = {side: (statistics.median(f for f, _ in rows), statistics.median(r for _, r in rows))
               for side, rows in results.items()}
    (d_first, d_rate), (b_first, b_rate) = medians["direct"], medians["broker"]
    print(f"GPT-2 width {args.width}, {args.layers} layers, {args.tokens} tokens asked "
          f"({tokens:.0f} made on average), {args.rounds} rounds x {len(PROMPTS)} prompts")
    print(f"in process:     {d_rate:8.1f} tokens/s, first token {d_first * 1000:7.1f} ms (p50)")
    print(f"via the broker: {b_rate:8.1f} tokens/s, first token {b_first * 1000:7.1f} ms (p50)")
    print(f"throughput ratio {b_rate / d_rate:.2f} (goal >= 0.9); first token added "
          f"{(b_first - d_first) * 1000:.1f} ms (goal < 20 ms)")


if __name__ == "__main__":
    main()
