"""The one result type every stage and every caller agrees on.

Each stage returns a :class:`Check`: passed, or failed with a reason code and a sentence for
people. The pipeline turns the first failing check into the message's :class:`Verdict`; logs, CLI
output, exit codes, HTTP status and metrics all read that verdict and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Outcome(StrEnum):
    STORED = "stored"
    UNCHANGED = "unchanged"
    REJECTED = "rejected"
    TEMPFAIL = "tempfail"


#: Reason codes, each with the sentence the README's table uses.
REASONS: dict[str, str] = {
    "ok": "The certificate was stored, or the same one was already stored.",
    "dkim-missing": "The message has no DKIM signature, so its From: address cannot be trusted.",
    "dkim-invalid": "No DKIM signature verifies (bad signature, bad or weak key, partial body).",
    "dkim-misaligned": "A DKIM signature verifies, but for a domain other than the From: domain.",
    "not-signed": "The message carries no S/MIME signature (plain, encrypted-only or certs-only).",
    "bad-signature": "The S/MIME signature does not match the message: altered or corrupt.",
    "no-certificate": "The signer's certificate is not in the message.",
    "untrusted": "The certificate does not chain to a trusted root for email.",
    "expired": "The certificate (or one above it) had expired at the verification time.",
    "not-yet-valid": "The certificate (or one above it) was not yet valid when verified.",
    "email-mismatch": "The certificate is for an address other than the From: address.",
    "wrong-key-usage": "The certificate may not be used for email protection or encryption.",
    "weak-algorithm": "The signature uses a weak algorithm (SHA-1, MD5, small keys).",
    "malformed": "The message or signature cannot be parsed, or exceeds a safety bound.",
    "older-than-stored": "A newer certificate is already stored for this address.",
    "unsafe-address": "The From: address cannot be used safely as a file name.",
    "dns-error": "A DNS lookup for the DKIM key timed out or failed; the relay should retry.",
    "store-error": "The certificate could not be written (disk full, read-only, permissions).",
    "internal-error": "An unexpected error; logged with its traceback; the relay should retry.",
}


@dataclass(frozen=True)
class Check:
    """A stage's answer: ``reason`` is ``"ok"`` when it passed; ``detail`` says why in words."""

    reason: str
    detail: str = ""
    tempfail: bool = False

    @property
    def ok(self) -> bool:
        return self.reason == "ok"

    @classmethod
    def passed(cls, detail: str = "") -> Check:
        return cls("ok", _one_line(detail))

    @classmethod
    def fail(cls, reason: str, detail: str) -> Check:
        assert reason in REASONS, reason
        return cls(reason, _one_line(detail))

    @classmethod
    def retry(cls, reason: str, detail: str) -> Check:
        assert reason in REASONS, reason
        return cls(reason, _one_line(detail), tempfail=True)


def _one_line(text: str) -> str:
    """Library messages can span lines; a log line and a CLI line must not."""
    lines = text.strip().splitlines()
    return lines[0] if lines else ""


@dataclass(frozen=True)
class Verdict:
    """How one message ended. Everything downstream derives from this value."""

    outcome: Outcome
    reason: str
    email: str | None = None
    path: str | None = None
    detail: str = ""

    @classmethod
    def from_check(cls, check: Check, email: str | None = None) -> Verdict:
        outcome = Outcome.TEMPFAIL if check.tempfail else Outcome.REJECTED
        return cls(outcome, check.reason, email, None, check.detail)

    @property
    def final(self) -> bool:
        """A final verdict needs no retry by the relay."""
        return self.outcome is not Outcome.TEMPFAIL

    def as_dict(self) -> dict[str, str | None]:
        return {
            "outcome": self.outcome.value,
            "reason": self.reason,
            "email": self.email,
            "path": self.path,
        }
