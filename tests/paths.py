"""Where the shared real-world corpus lives; the suite stops with a clear message without it."""

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
SPARKY = SHARED / "corpus" / "sparkysecure"
THUNDERBIRD = SHARED / "corpus" / "thunderbird"
PKITS = SHARED / "corpus" / "pkits"
CERTDATA = SHARED / "trust" / "certdata.txt"


def require_shared() -> None:
    """Fail the whole session early when ../shared is missing (the corpus is never copied in)."""
    if not (SPARKY / "MANIFEST.md").is_file() or not CERTDATA.is_file():
        pytest.exit(
            f"The shared corpus is missing: expected {SHARED} beside the repository "
            "(../shared with corpus/ and trust/). Clone the workspace layout, not just the repo.",
            returncode=3,
        )
