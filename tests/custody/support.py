"""Helpers for the key custody tests: deposits to protect, and what their blobs say."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from broker.adapters.custody import describe_blob
from broker.container import Escrow, build_escrow
from broker.domain.principals import OPERATOR, service_token
from broker.services import admin
from broker.services.deposits import identity_object, open_deposit
from broker.services.master_key import DEPOSIT, wrapped_secrets

ORG = "acme-ai"
DEPOSITOR = service_token("tok-depositor", ORG, "depositor")


def make_deposits(escrow: Escrow, count: int, first: int = 0) -> list[str]:
    """`count` open deposits of acme-ai/gpt-small, each with an identity wrapped by custody."""
    with escrow.uow() as uow:
        if admin.find_org(uow, ORG) is None:
            admin.create_org(uow, OPERATOR, ORG)
    made = []
    for number in range(first, first + count):
        with escrow.uow() as uow:
            deposit = open_deposit(escrow, uow, DEPOSITOR, f"{ORG}/gpt-small", f"v{number}", None)
            made.append(deposit.id)
    return made


def plaintexts(escrow: Escrow) -> dict[str, bytes]:
    """Every wrapped secret opened with `escrow`'s custody; each deposit's bucket copy must be
    the row's blob."""
    opened = {}
    with escrow.uow() as uow:
        secrets = wrapped_secrets(uow)
    for secret in secrets:
        opened[secret.label] = escrow.custody.unwrap(secret.blob, secret.context)
        if secret.kind == DEPOSIT:
            assert escrow.store.get_bytes(identity_object(secret.id)) == secret.blob, secret.label
    return opened


def keys_in_use(escrow: Escrow) -> dict[str, str]:
    """{secret: "backend:key id"} as the blobs name them."""
    with escrow.uow() as uow:
        return {s.label: s.key for s in wrapped_secrets(uow)}


def bucket_keys(escrow: Escrow, deposit_ids: list[str]) -> set[str]:
    found = set()
    for deposit_id in deposit_ids:
        info = describe_blob(escrow.store.get_bytes(identity_object(deposit_id)))
        found.add(f"{info.backend}:{info.key_id}")
    return found


@contextmanager
def fresh_escrow(escrow: Escrow) -> Iterator[Escrow]:
    """Another broker process on the same settings (nothing cached from `escrow`)."""
    built = build_escrow(escrow.settings)
    try:
        yield built
    finally:
        built.engine.dispose()
