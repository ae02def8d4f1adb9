"""The shared corpus manifests, read as the test cases they describe."""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from tests.paths import SPARKY, THUNDERBIRD

# Manifest wording -> our reason codes.
_SPARKY_REASONS = {
    "no DKIM signature": "dkim-missing",
    "DKIM signature does not verify": "dkim-invalid",
    "corrupt S/MIME signature": "bad-signature",
    "not S/MIME signed": "not-signed",
    "not signed": "not-signed",
}


@dataclass(frozen=True)
class SparkyRow:
    name: str
    raw: bytes
    outcome: str  # "stored" or "rejected"
    reason: str
    email: str | None
    fingerprint: str | None
    verify_at: datetime | None


def postman_email() -> bytes:
    """The email of the live-captured relay request (parsed twice: JSON inside JSON)."""
    collection = json.loads((SPARKY / "postman_collection.json").read_text("utf-8"))
    batch = json.loads(collection["item"][0]["request"]["body"]["raw"])
    return batch[0]["msys"]["relay_message"]["content"]["email_rfc822"].encode("utf-8")


def sparky_rows() -> list[SparkyRow]:
    text = (SPARKY / "MANIFEST.md").read_text("utf-8")
    section = text.split("## Results", 1)[1].split("Summary:", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 8 or not cells[0].startswith("`"):
            continue
        name = cells[0].split("`")[1]
        raw = postman_email() if name.endswith(".json") else (SPARKY / name).read_bytes()
        rows.append(_sparky_row(name, raw, cells[6], cells[7]))
    if len(rows) != 8:
        raise AssertionError(f"expected 8 rows in the sparkysecure manifest, found {len(rows)}")
    return rows


def _sparky_row(name: str, raw: bytes, expected: str, verify_at: str) -> SparkyRow:
    when = re.search(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)", verify_at)
    at = datetime.fromisoformat(when[1].replace("Z", "+00:00")) if when else None
    if expected.startswith("store"):
        email = re.search(r"`([^`]+)\.crt`", expected)[1]
        fingerprint = re.search(r"fingerprint `([0-9a-f]{64})`", expected)[1]
        return SparkyRow(name, raw, "stored", "ok", email, fingerprint, at)
    why = expected.split(":", 1)[1].split("(")[0].strip()
    return SparkyRow(name, raw, "rejected", _SPARKY_REASONS[why], None, None, at)


@dataclass(frozen=True)
class ThunderbirdRow:
    file: str
    sender: str
    expected: str  # "store:<email>" or "reject:<reason>"
    sha1: bool


def thunderbird_rows() -> list[ThunderbirdRow]:
    with (THUNDERBIRD / "MANIFEST.details.tsv").open(encoding="utf-8") as handle:
        sha1 = {row["file"]: row["sha1"] == "yes" for row in csv.DictReader(handle, delimiter="\t")}
    with (THUNDERBIRD / "MANIFEST.tsv").open(encoding="utf-8") as handle:
        return [
            ThunderbirdRow(row["file"], row["from"], row["expected"], sha1[row["file"]])
            for row in csv.DictReader(handle, delimiter="\t")
        ]


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)
