"""The verdict journal: a bounded record of recent verdicts, kept by the store.

Support staff are asked "I sent my signed mail, why isn't my certificate there?". The log
answers, but it is rotated away, mixed with every step of every message and not searchable from
the operator page. The journal keeps one small record per verdict (when, who, the outcome, the
reason and the sentence the log gives) for ``verdict-retention-days``; each backend keeps it
beside its certificates. It holds email addresses, and the README says so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from datetime import UTC, datetime

from smime_collector.verdict import Reason, Verdict

#: Bounds on what one record keeps: the detail sentence, and any other text field.
MAX_DETAIL_CHARS = 500
MAX_FIELD_CHARS = 320


def _clip(value: str | None, limit: int = MAX_FIELD_CHARS) -> str | None:
    if value is None:
        return None
    return value if len(value) <= limit else value[: limit - 3] + "..."


@dataclass(frozen=True)
class JournalEntry:
    """One verdict as the journal keeps it. ``sender`` is the envelope sender when the intake
    knows it: the only name a message without a usable From: address can be found by."""

    at: datetime
    outcome: str
    reason: str
    email: str | None = None
    detail: str = ""
    intake: str = ""
    message_id: str | None = None
    request_id: str = "-"
    sender: str | None = None

    @classmethod
    def from_verdict(
        cls,
        verdict: Verdict,
        at: datetime,
        intake: str,
        message_id: str | None = None,
        request_id: str = "-",
        sender: str | None = None,
    ) -> JournalEntry:
        return cls(
            at=at.astimezone(UTC),
            outcome=verdict.outcome.value,
            reason=str(verdict.reason),
            email=_clip(verdict.email),
            detail=_clip(verdict.detail, MAX_DETAIL_CHARS) or "",
            intake=_clip(intake) or "",
            message_id=_clip(message_id),
            request_id=_clip(request_id) or "-",
            sender=_clip(sender),
        )

    @property
    def explanation(self) -> str:
        """The plain-words sentence for the reason code (the README's table)."""
        try:
            return Reason(self.reason).explanation
        except ValueError:  # a code from a newer or older release
            return ""

    def matches(self, text: str) -> bool:
        text = text.strip().lower()
        return not text or any(text in (name or "").lower() for name in (self.email, self.sender))

    def to_json(self) -> str:
        # Every field is a string, None or the datetime, so a shallow dict is what ``asdict``
        # gives, without its deep copy (two thirds of writing a record, once per message).
        record = {name: getattr(self, name) for name in _FIELDS}
        record["at"] = self.at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return json.dumps(record, ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, line: str) -> JournalEntry | None:
        """The entry on one line, or ``None`` for a line that is not one (a torn last line)."""
        try:
            record = json.loads(line)
            at = datetime.fromisoformat(record.pop("at").replace("Z", "+00:00"))
            return cls(at=at, **record)
        except (ValueError, TypeError, KeyError, AttributeError):
            return None


_FIELDS = tuple(f.name for f in fields(JournalEntry))


@dataclass(frozen=True)
class JournalPage:
    """Entries newest first from ``offset``; ``more`` says whether a next page exists."""

    entries: list[JournalEntry]
    offset: int
    limit: int
    more: bool
