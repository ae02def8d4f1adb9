"""What every intake hands the pipeline: the message bytes exactly as they arrived, and context.

Every door (SparkPost, other providers' webhooks, SMTP/LMTP, the Postfix pipe, the CLI) turns
its input into one :class:`Delivery`. Any changed byte would break DKIM and the S/MIME
signature, so ``raw`` is never re-encoded; the envelope is for logs and answers only and never
decides a verdict.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime


@dataclass(frozen=True)
class Envelope:
    """The transport's view: SMTP MAIL FROM / RCPT TO, and the provider's message id if any."""

    sender: str | None = None
    recipients: tuple[str, ...] = ()
    provider_id: str | None = None


@dataclass(frozen=True)
class Delivery:
    """One message to judge. ``intake`` names the door (``sparkpost``, ``smtp``, ``cli`` ...)."""

    raw: bytes
    intake: str
    received_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    envelope: Envelope = field(default_factory=Envelope)
