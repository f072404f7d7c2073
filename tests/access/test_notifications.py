"""Email notifications, on SQLite and PostgreSQL, delivered to a real SMTP server process on
loopback (aiosmtpd, tests/smtp_sink.py): each notice queued by the real action in its own
transaction and sent by the worker's step; nothing queued when SMTP is off; retries while the
server is down, with a clock that moves (no sleeping); failure for good; dedupe."""

from __future__ import annotations

import contextlib
import email
import email.policy
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from access_support import stored_grant
from sqlalchemy import func, select

from broker.adapters.db.models import OutboxMessage, ReleaseAgreement
from broker.config import SmtpSettings
from broker.domain.clock import now
from broker.domain.principals import SYSTEM, Principal, PrincipalKind
from broker.services import access, agreements, notifications
from broker.services.agreements.triggers import fire_if_met

SINK = Path(__file__).resolve().parents[1] / "smtp_sink.py"
VERSION = "acme-ai/gpt-small@2024-05"
AGREEMENT_PATH = "/api/v1/agreements/acme-ai/gpt-small/2024-05"
AGREEMENT = """\
model: acme-ai/gpt-small
trustees: [tina@trust.example, tom@trust.example]
triggers:
  - name: sunset
    when: {date: 2100-01-01}
    unlocks: public
"""
SUNSET = datetime(2100, 1, 1, 0, 0, 1, tzinfo=UTC)


@pytest.fixture
def smtp_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def settings(settings, smtp_port):
    smtp = SmtpSettings("127.0.0.1", smtp_port, "plain", "escrow@broker.example", timeout_s=5)
    return settings.with_overrides(smtp=smtp, notify_backoff_s=60, notify_max_attempts=3)


@contextlib.contextmanager
def smtp_server(mailbox: Path, port: int, answer: str | None = None) -> Iterator[None]:
    """tests/smtp_sink.py on 127.0.0.1:port until the block ends."""
    process = subprocess.Popen(
        [sys.executable, str(SINK), str(mailbox), str(port), *([answer] if answer else [])],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the SMTP sink did not start (exit {process.poll()})")
            time.sleep(0.05)
        yield
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def mailbox(tmp_path) -> Path:
    return tmp_path / "mailbox"


@pytest.fixture
def smtp(mailbox, smtp_port) -> Iterator[None]:
    with smtp_server(mailbox, smtp_port):
        yield


def received(mailbox: Path) -> list[email.message.EmailMessage]:
    messages = []
    for path in sorted(mailbox.glob("*.eml")) if mailbox.exists() else []:
        envelope, _, text = path.read_text().partition("\n")
        message = email.message_from_string(text, policy=email.policy.default)
        assert message["To"] == envelope  # one recipient per message
        messages.append(message)
    return messages


def outbox(escrow) -> list[OutboxMessage]:
    with escrow.uow() as uow:
        rows = list(uow.session.scalars(select(OutboxMessage).order_by(OutboxMessage.id)))
        uow.session.expunge_all()
        return rows


def subject(message: email.message.EmailMessage) -> str:
    return " ".join(str(message["Subject"]).split())  # as read, however it was folded


def body(message: email.message.EmailMessage) -> str:
    return message.get_content()


@pytest.fixture
def pending(sealed, reviewer, researcher) -> str:
    asked = researcher.ask()
    assert asked.json["request"]["state"] == "pending", asked.json
    return asked.json["request"]["id"]


def test_a_request_waiting_mails_the_reviewers_not_the_researcher(pending, escrow, smtp,
                                                                  mailbox, person):
    assert notifications.send_due(escrow) == 1
    [message] = received(mailbox)
    assert message["To"] == "rita@acme.example"
    assert message["From"] == "escrow@broker.example"
    assert subject(message) == f"Review waiting: {VERSION} ({pending})"
    assert pending in body(message) and "interpretability study" in body(message)
    assert "rosa@uni.example" not in message.as_string()
    assert notifications.send_due(escrow) == 0  # once
    assert [m.state for m in outbox(escrow)] == ["sent"]


def test_the_worker_sends_the_mail_never_the_request(sealed, reviewer, researcher, escrow, smtp,
                                                    mailbox):
    import threading

    from broker.services.worker import run_forever

    asked = researcher.ask()  # the SMTP server is up, yet the request only queues the notice
    assert asked.json["request"]["state"] == "pending", asked.json
    assert received(mailbox) == [] and [m.state for m in outbox(escrow)] == ["queued"]
    stop = threading.Event()
    worker = threading.Thread(target=run_forever, args=(escrow, stop, 0.05))
    worker.start()
    try:
        deadline = time.monotonic() + 20
        while not received(mailbox) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        worker.join(30)
    [message] = received(mailbox)
    assert subject(message) == f"Review waiting: {VERSION} ({asked.json['request']['id']})"
    assert [m.state for m in outbox(escrow)] == ["sent"]


def test_a_decision_mails_the_researcher(pending, reviewer, escrow, smtp, mailbox):
    notifications.send_due(escrow)
    approved = reviewer.post(f"/api/v1/requests/{pending}/approve")
    assert approved.status_code == 200, approved.json
    assert notifications.send_due(escrow) == 1
    decision = received(mailbox)[-1]
    assert decision["To"] == "rosa@uni.example"
    assert subject(decision) == f"Request approved: {VERSION} ({pending})"
    grant_id = approved.json["grant"]["id"] if approved.json.get("grant") else None
    assert "lets you fetch the weights until" in body(decision)
    assert grant_id is None or grant_id in body(decision)


def test_a_denial_mails_the_researcher(pending, reviewer, escrow, smtp, mailbox):
    assert reviewer.post(f"/api/v1/requests/{pending}/deny").status_code == 200
    notifications.send_due(escrow)
    assert received(mailbox)[-1]["Subject"] == f"Request denied: {VERSION} ({pending})"


@pytest.fixture
def granted(pending, reviewer, escrow) -> str:
    approved = reviewer.post(f"/api/v1/requests/{pending}/approve")
    assert approved.status_code == 200, approved.json
    with escrow.uow() as uow:  # the decision's own notices are another test's
        uow.session.execute(OutboxMessage.__table__.delete())
        uow.commit()
    grants = reviewer.get("/api/v1/grants?org=acme-ai").json
    return next(g["id"] for g in grants["grants"] if g["request_id"] == pending)


def test_a_grant_expiring_and_expired_is_mailed_once_each(granted, escrow, smtp, mailbox):
    expires = stored_grant(escrow, granted).expires_at
    assert notifications.queue_grant_notices(escrow, expires - timedelta(days=4)) == 0
    soon = expires - timedelta(days=2)
    for _ in range(3):  # the worker looks again and again: one notice
        notifications.queue_grant_notices(escrow, soon)
        notifications.send_due(escrow, soon)
    [expiring] = received(mailbox)
    assert expiring["To"] == "rosa@uni.example"
    assert subject(expiring).startswith(f"Grant expiring {expires:%Y-%m-%d}: {VERSION}")
    assert granted in body(expiring)
    later = expires + timedelta(hours=1)
    for _ in range(3):
        notifications.queue_grant_notices(escrow, later)
        notifications.send_due(escrow, later)
    assert [subject(m) for m in received(mailbox)][1:] == [
        f"Grant expired: {VERSION} ({granted})"]
    assert f"escrow grants close {granted} --attest-deleted" in body(received(mailbox)[1])
    assert [m.kind for m in outbox(escrow)] == ["grant_expiring", "grant_expired"]


@pytest.fixture
def attached(sealed, person, escrow):
    admin = person("ada@acme.example", (("acme-ai", "admin"),))
    made = admin.client.put(AGREEMENT_PATH, json={"text": AGREEMENT}, headers=admin.auth)
    assert made.status_code == 200, made.json
    return sealed


def test_a_trigger_that_fired_mails_the_lab_admins_and_trustees_and_a_rollback_nothing(
    attached, escrow, smtp, mailbox
):
    deposit_id = attached["deposit_id"]
    with escrow.uow() as uow:  # the trigger fires in a transaction that then rolls back
        row = uow.session.scalar(select(ReleaseAgreement).where(
            ReleaseAgreement.deposit_id == deposit_id))
        assert fire_if_met(escrow, uow, row.deposit, row, SYSTEM, SUNSET) is not None
        assert uow.session.scalar(select(func.count()).select_from(OutboxMessage)) == 3
    assert outbox(escrow) == []
    assert agreements.fire_due(escrow, SUNSET) == [deposit_id]
    assert notifications.send_due(escrow, SUNSET) == 3
    messages = received(mailbox)
    assert sorted(m["To"] for m in messages) == [
        "ada@acme.example", "tina@trust.example", "tom@trust.example"]
    assert {subject(m) for m in messages} == {
        f"Release agreement triggered: {VERSION} (sunset)"}
    assert "anyone logged in may now fetch it" in body(messages[0])


def test_nothing_is_queued_when_smtp_is_unset(sealed, reviewer, researcher, escrow):
    from broker.container import build_escrow

    off = build_escrow(escrow.settings.with_overrides(smtp=None))
    rosa = Principal(kind=PrincipalKind.USER, id=researcher.user_id, auth_time=now())
    try:
        with off.uow() as uow:
            made = access.create_request(uow, rosa, off.settings.policy_dir, "acme-ai/gpt-small",
                                         "2024-05", "interpretability study")
            assert made.state == "pending"
        assert notifications.queue_grant_notices(off, now() + timedelta(days=365)) == 0
        assert notifications.send_due(off) == 0
    finally:
        off.engine.dispose()
    assert outbox(escrow) == []


def test_a_server_down_is_retried_later_and_the_message_sent_once(pending, escrow, mailbox,
                                                                  smtp_port):
    start = now()
    assert notifications.send_due(escrow, start) == 0  # nobody listens on the port
    [message] = outbox(escrow)
    assert message.state == "queued" and message.attempts == 1
    assert "could not be reached" in message.last_error and "retried" in message.last_error
    assert message.run_after == start + timedelta(seconds=60)
    assert notifications.send_due(escrow, start + timedelta(seconds=59)) == 0  # not due yet
    assert outbox(escrow)[0].attempts == 1
    with smtp_server(mailbox, smtp_port):
        assert notifications.send_due(escrow, start + timedelta(seconds=61)) == 1
        assert notifications.send_due(escrow, start + timedelta(days=1)) == 0
    assert len(received(mailbox)) == 1
    [sent] = outbox(escrow)
    assert (sent.state, sent.attempts, sent.last_error) == ("sent", 2, None)


def test_a_server_that_keeps_deferring_fails_the_message_after_the_last_attempt(
    pending, escrow, mailbox, smtp_port
):
    moment = now()
    with smtp_server(mailbox, smtp_port, "451 4.3.0 try again later"):
        for wait in (0, 60, 120):  # backoff 60 s, then 120 s; three attempts in all
            moment += timedelta(seconds=wait + 1)
            notifications.send_due(escrow, moment)
    [message] = outbox(escrow)
    assert (message.state, message.attempts) == ("failed", 3)
    assert "451" in message.last_error
    assert notifications.send_due(escrow, moment + timedelta(days=30)) == 0


def test_a_refusal_for_good_fails_the_message_at_once(pending, escrow, mailbox, smtp_port):
    with smtp_server(mailbox, smtp_port, "550 5.1.1 no such mailbox"):
        notifications.send_due(escrow)
    [message] = outbox(escrow)
    assert (message.state, message.attempts) == ("failed", 1)
    assert "550" in message.last_error and "no such mailbox" in message.last_error
    assert received(mailbox) == []


# --- settings and the operator's view ----------------------------------------------------------


@pytest.mark.parametrize(("url", "wanted"), [
    ("smtp://127.0.0.1:2525", ("127.0.0.1", 2525, "plain", "")),
    ("smtp+starttls://mailer:s%40cret@mail.example", ("mail.example", 587, "starttls", "mailer")),
    ("smtps://mailer:secret@mail.example:4650", ("mail.example", 4650, "ssl", "mailer")),
])
def test_smtp_urls(tmp_path, url, wanted):
    from broker.config import load_settings

    settings = load_settings({"ESCROW_DATA_DIR": str(tmp_path), "ESCROW_SMTP_URL": url,
                              "ESCROW_SMTP_FROM": "escrow@lab.example"})
    smtp = settings.smtp
    assert (smtp.host, smtp.port, smtp.security, smtp.username) == wanted
    assert "secret" not in repr(settings) and settings.notify_expiring_days == 3
    if "s%40cret" in url:
        assert smtp.password == "s@cret"


@pytest.mark.parametrize(("env", "said"), [
    ({"ESCROW_SMTP_URL": "imap://u:hunter2@mail.example"}, "unsupported scheme"),
    ({"ESCROW_SMTP_URL": "smtp://u:hunter2@mail.example"}, "unencrypted"),
    ({"ESCROW_SMTP_URL": "smtps://u:hunter2@mail.example:port"}, "port"),
    ({"ESCROW_SMTP_URL": "smtps://u:hunter2@mail.example/x?y=1"}, "is not smtp://"),
    ({"ESCROW_SMTP_URL": "smtps://u:hunter2@mail.example"}, "ESCROW_SMTP_FROM"),
    ({"ESCROW_NOTIFY_EXPIRING_DAYS": "soon"}, "ESCROW_NOTIFY_EXPIRING_DAYS"),
])
def test_a_bad_smtp_setting_is_refused_without_the_password(tmp_path, env, said):
    from broker.config import load_settings
    from broker.errors import ConfigError

    with pytest.raises(ConfigError) as refused:
        load_settings({"ESCROW_DATA_DIR": str(tmp_path), **env})
    assert said in refused.value.message
    assert "hunter2" not in refused.value.message + refused.value.hint


def test_the_operator_lists_the_outbox(pending, escrow, mailbox, smtp_port, monkeypatch):
    import json

    from click.testing import CliRunner

    from broker.cli import admin as admin_cli

    with smtp_server(mailbox, smtp_port, "550 5.1.1 no such mailbox"):
        notifications.send_due(escrow)
    monkeypatch.setattr(admin_cli, "server_escrow", lambda: escrow)
    monkeypatch.setattr("broker.cli.notifications.server_escrow", lambda: escrow)
    shown = CliRunner().invoke(admin_cli.admin, ["notifications", "--state", "failed"])
    assert shown.exit_code == 0, shown.output
    assert "failed" in shown.output and "550 5.1.1 no such mailbox" in shown.output
    assert shown.output.rstrip().endswith("1 message(s) failed")
    listed = CliRunner().invoke(admin_cli.admin, ["notifications", "--state", "queued", "--json"])
    assert json.loads(listed.output.splitlines()[-1]) == {"messages": []}


def test_two_workers_never_send_the_same_message_twice(sealed, person, researcher, escrow,
                                                       smtp, mailbox):
    import threading

    for name in ("rita", "rick", "rhea", "rudi", "ruth", "rolf"):
        person(f"{name}@acme.example", (("acme-ai", "reviewer"),))
    assert researcher.ask().json["request"]["state"] == "pending"
    counts: list[int] = []
    workers = [threading.Thread(target=lambda: counts.append(notifications.send_due(escrow)))
               for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert sum(counts) == 6
    assert sorted(m["To"] for m in received(mailbox)) == sorted(
        f"{n}@acme.example" for n in ("rita", "rick", "rhea", "rudi", "ruth", "rolf"))
