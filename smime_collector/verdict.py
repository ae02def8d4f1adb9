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


class Reason(StrEnum):
    """Every reason code a verdict can carry; each member's ``explanation`` is the sentence the
    README's table shows (``tests/test_docs.py`` checks the two agree)."""

    explanation: str

    def __new__(cls, code: str, explanation: str) -> Reason:
        member = str.__new__(cls, code)
        member._value_ = code
        member.explanation = explanation
        return member

    OK = "ok", "The certificate was stored, or the same one was already stored."
    DKIM_MISSING = (
        "dkim-missing",
        "The message has no DKIM signature, so its From: address cannot be trusted.",
    )
    DKIM_INVALID = (
        "dkim-invalid",
        "No DKIM signature verifies (bad signature, bad or weak key, partial body).",
    )
    DKIM_MISALIGNED = (
        "dkim-misaligned",
        "No DKIM signature is by the From: domain's organisation (no `d=` aligns).",
    )
    NOT_SIGNED = (
        "not-signed",
        "The message carries no S/MIME signature (plain, encrypted-only or certs-only).",
    )
    BAD_SIGNATURE = (
        "bad-signature",
        "The S/MIME signature does not match the message: altered or corrupt.",
    )
    NO_CERTIFICATE = "no-certificate", "The signer's certificate is not in the message."
    UNTRUSTED = "untrusted", "The certificate does not chain to a trusted root for email."
    EXPIRED = "expired", "The certificate (or one above it) had expired at the verification time."
    NOT_YET_VALID = (
        "not-yet-valid",
        "The certificate (or one above it) was not yet valid when verified.",
    )
    EMAIL_MISMATCH = (
        "email-mismatch",
        "The certificate is for an address other than the From: address.",
    )
    WRONG_KEY_USAGE = (
        "wrong-key-usage",
        "The certificate may not be used for email protection or encryption.",
    )
    WEAK_ALGORITHM = (
        "weak-algorithm",
        "The signature uses a weak algorithm (SHA-1, MD5, small keys).",
    )
    MALFORMED = (
        "malformed",
        "The message or signature cannot be parsed, or exceeds a safety bound.",
    )
    REVOKED = (
        "revoked",
        "The certificate (or one above it) was revoked at the verification time.",
    )
    REVOCATION_UNKNOWN = (
        "revocation-unknown",
        "No usable CRL or OCSP answer (revocation = hard): none found, or none that verifies.",
    )
    REVOCATION_UNAVAILABLE = (
        "revocation-unavailable",
        "A CRL or OCSP server failed or timed out, or a CRL is past its nextUpdate "
        "(revocation = hard); the relay should retry.",
    )
    OLDER_THAN_STORED = (
        "older-than-stored",
        "A newer certificate is already stored for this address.",
    )
    UNSAFE_ADDRESS = "unsafe-address", "The From: address cannot be used safely as a file name."
    DNS_ERROR = (
        "dns-error",
        "A DNS lookup for the DKIM key timed out or failed; the relay should retry.",
    )
    STORE_ERROR = (
        "store-error",
        "The certificate could not be written (disk full, read-only, permissions, database down).",
    )
    INTERNAL_ERROR = (
        "internal-error",
        "An unexpected error; logged with its traceback; the relay should retry.",
    )


#: Reason code → sentence: the table as a mapping (the operator page explains with it).
REASONS: dict[str, str] = {reason.value: reason.explanation for reason in Reason}


@dataclass(frozen=True)
class Check:
    """A stage's answer: ``reason`` is ``"ok"`` when it passed; ``detail`` says why in words."""

    reason: Reason
    detail: str = ""
    tempfail: bool = False

    @property
    def ok(self) -> bool:
        return self.reason == "ok"

    @classmethod
    def passed(cls, detail: str = "") -> Check:
        return cls(Reason.OK, _one_line(detail))

    @classmethod
    def fail(cls, reason: Reason | str, detail: str) -> Check:
        """A final failure; ``reason`` must be a known code (a typo is a programming error)."""
        return cls(Reason(reason), _one_line(detail))

    @classmethod
    def retry(cls, reason: Reason | str, detail: str) -> Check:
        """A failure a later attempt may cure: the message ends ``tempfail``."""
        return cls(Reason(reason), _one_line(detail), tempfail=True)


def _one_line(text: str) -> str:
    """Library messages can span lines; a log line and a CLI line must not."""
    lines = text.strip().splitlines()
    return lines[0] if lines else ""


@dataclass(frozen=True)
class Verdict:
    """How one message ended. Everything downstream derives from this value.

    ``location`` is where the certificate is kept, as the store describes it: a file path for
    the folder, ``postgresql:<address>`` for the database.
    """

    outcome: Outcome
    reason: Reason
    email: str | None = None
    location: str | None = None
    detail: str = ""

    @classmethod
    def from_check(cls, check: Check, email: str | None = None) -> Verdict:
        outcome = Outcome.TEMPFAIL if check.tempfail else Outcome.REJECTED
        return cls(outcome, check.reason, email, None, check.detail)

    @property
    def final(self) -> bool:
        """A final verdict needs no retry by the sender."""
        return self.outcome is not Outcome.TEMPFAIL

    @property
    def explanation(self) -> str:
        """The plain-words sentence for the reason code."""
        return Reason(self.reason).explanation

    def as_dict(self) -> dict[str, str | None]:
        """The JSON form; ``path`` is the 1.0 name of ``location``, kept for existing readers."""
        return {
            "outcome": self.outcome.value,
            "reason": str(self.reason),
            "email": self.email,
            "location": self.location,
            "path": self.location,
        }
