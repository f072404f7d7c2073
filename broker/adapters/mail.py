"""Sending one email through an SMTP server (smtplib), with a time limit on the connection and on
every command, STARTTLS or TLS as the URL's scheme says.

A failure is either worth retrying (`MailDeferred`: the server is down or slow, answers 4xx, a
login or TLS problem an operator can fix) or not (`MailRejected`: the server refuses this
message with a 5xx). Neither carries the password.
"""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from broker.config import SmtpSettings
from broker.domain.clock import now
from broker.errors import Unavailable


class MailDeferred(Unavailable):
    """The message could not be sent now; a later attempt may succeed."""

    title = "mail server unavailable"


class MailRejected(Unavailable):
    """The server refused this message for good (a 5xx answer)."""

    title = "mail refused"


def send_mail(smtp: SmtpSettings, recipient: str, subject: str, body: str) -> None:
    """Send one plain-text message to one recipient, or raise MailDeferred / MailRejected."""
    message = EmailMessage()
    message["From"] = smtp.sender
    message["To"] = recipient
    message["Subject"] = subject
    message["Date"] = format_datetime(now())
    message["Message-ID"] = make_msgid(domain=smtp.sender.rsplit("@", 1)[-1])
    message.set_content(body)
    try:
        with _connect(smtp) as server:
            if smtp.username:
                server.login(smtp.username, smtp.password)
            server.send_message(message, from_addr=smtp.sender, to_addrs=[recipient])
    except smtplib.SMTPAuthenticationError as error:  # the deployment's to fix, not the message
        raise MailDeferred(
            f"the mail server {smtp.where} refused the login ({error.smtp_code})",
            hint="check the user and password in ESCROW_SMTP_URL; the message is retried",
        ) from None
    except smtplib.SMTPRecipientsRefused as error:
        code, answer = next(iter(error.recipients.values()))
        raise _answered(smtp, code, answer) from None
    except smtplib.SMTPResponseException as error:
        raise _answered(smtp, error.smtp_code, error.smtp_error) from None
    except (smtplib.SMTPException, OSError) as error:  # refused, reset, timed out, TLS
        raise MailDeferred(
            f"the mail server {smtp.where} could not be reached or dropped the connection: "
            f"{type(error).__name__}: {error}",
            hint="check ESCROW_SMTP_URL and that the server runs; the message is retried",
        ) from None


def _connect(smtp: SmtpSettings) -> smtplib.SMTP:
    """A connection, greeted (and under TLS where the scheme says so). `timeout` bounds the
    connection and each command's reply alike."""
    context = ssl.create_default_context()
    if smtp.security == "ssl":
        return smtplib.SMTP_SSL(smtp.host, smtp.port, timeout=smtp.timeout_s, context=context)
    server = smtplib.SMTP(smtp.host, smtp.port, timeout=smtp.timeout_s)
    try:
        if smtp.security == "starttls":
            server.starttls(context=context)
    except BaseException:
        server.close()
        raise
    return server


def _answered(smtp: SmtpSettings, code: int, answer: bytes | str) -> Unavailable:
    text = answer.decode("utf-8", "replace") if isinstance(answer, bytes) else str(answer)
    said = f"the mail server {smtp.where} answered {code} {' '.join(text.split())[:300]}"
    if 500 <= code < 600:
        return MailRejected(
            said, hint="the server refuses this message for good: check the recipient address"
        )
    return MailDeferred(said, hint="the message is retried later")
