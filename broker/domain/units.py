"""How quantities read to a person: shared by the CLI's progress lines and the web pages."""

from __future__ import annotations


def human_bytes(n: float) -> str:
    """A size in binary units: "512 B", "1.5 KiB", "3.2 GiB"."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
