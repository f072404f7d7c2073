"""What access tests share beyond fixtures (imported by name: `conftest` is ambiguous)."""

WEIGHTS = {"model.safetensors": b"\x00weights\x01" * 9000, "config.json": b'{"layers": 2}'}
