"""`escrow pins`: the brokers' signing keys this machine pinned on first contact."""

from __future__ import annotations

import click

from broker.cli.output import emit
from broker.client import pins as pinning


@click.group("pins")
def pins() -> None:
    """The brokers' signing keys this machine pinned on first contact."""


@pins.command("list")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object as the last line")
def pins_list(as_json: bool) -> None:
    """List the pinned brokers and their keys."""
    pinned = pinning.load_pins()
    lines = [
        f"{name}  manifest {keys['manifest']['key_id']}  checkpoint {keys['checkpoint']['key_id']}"
        for name, keys in sorted(pinned.items())
    ]
    emit({"pins": pinned}, as_json, lines or ["no brokers pinned"])


@pins.command("forget")
@click.argument("broker_url")
def pins_forget(broker_url: str) -> None:
    """Forget a broker's pinned keys (only after its operator confirmed a key rotation)."""
    if pinning.forget(broker_url):
        click.echo(
            f"forgot the keys of {pinning.broker_id(broker_url)}; the next command "
            "pins the keys it is shown"
        )
    else:
        click.echo(f"no keys pinned for {pinning.broker_id(broker_url)}")
