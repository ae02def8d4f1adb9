"""Regenerate the S/MIME trust-anchor bundle from Mozilla's certdata.txt.

Usage: python tools/certdata2pem.py [CERTDATA] [--out PEM] [--sidecar JSON]

Defaults are resolved against the repository root, not the cwd, so the
tool gives the same result wherever it is run from. certdata.txt does not
state its CKBI version, so to regenerate the shipped files pass it, e.g.
``--builtins-version 2.69`` (see ../shared/trust/README.md).
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # run as a script: make smime_collector importable

from smime_collector.certdata import (
    email_anchors,
    parse_certdata,
    write_bundle,
)
from smime_collector.resources import SHIPPED_BUNDLE, SHIPPED_DISTRUST

DEFAULT_CERTDATA = REPO.parent / "shared" / "trust" / "certdata.txt"
DEFAULT_PEM = SHIPPED_BUNDLE
DEFAULT_SIDECAR = SHIPPED_DISTRUST
_VERSION_RE = re.compile(r'NSS_BUILTINS_LIBRARY_VERSION\s+"([^"]+)"')


def build_parser() -> argparse.ArgumentParser:
    """Describe the command line; defaults are shown relative to the repo."""
    parser = argparse.ArgumentParser(
        description="Extract the email (S/MIME) trust anchors of Mozilla's "
        "certdata.txt into a PEM bundle plus a distrust-after JSON sidecar.",
    )
    parser.add_argument(
        "certdata",
        nargs="?",
        type=Path,
        default=DEFAULT_CERTDATA,
        help="certdata.txt to read (default: ../shared/trust/certdata.txt beside the repository)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_PEM,
        help="PEM bundle to write (default: the shipped smime_collector/data/smime-ca-bundle.pem)",
    )
    parser.add_argument(
        "--sidecar",
        type=Path,
        default=DEFAULT_SIDECAR,
        help="distrust-after JSON to write "
        "(default: the shipped smime_collector/data/smime-ca-bundle.distrust.json)",
    )
    parser.add_argument(
        "--builtins-version",
        help="NSS_BUILTINS_LIBRARY_VERSION to record in the source note. "
        "certdata.txt itself does not state it (NSS keeps it in nssckbi.h), "
        "so by default it is read from the input or a sibling nssckbi.h",
    )
    return parser


def detect_builtins_version(certdata: Path, text: str) -> str | None:
    """Find NSS_BUILTINS_LIBRARY_VERSION in the input or its sibling nssckbi.h."""
    match = _VERSION_RE.search(text)
    header = certdata.with_name("nssckbi.h")
    if match is None and header.is_file():
        match = _VERSION_RE.search(header.read_text(encoding="utf-8"))
    return match.group(1) if match else None


def source_note(version: str, digest: str) -> str:
    """Name the input by content, never by path, so outputs are machine-neutral."""
    return f"Mozilla certdata.txt (NSS_BUILTINS_LIBRARY_VERSION {version}, SHA-256 {digest})"


def main(argv: list[str] | None = None) -> int:
    """Parse, filter to email anchors, write both files, print one summary line."""
    args = build_parser().parse_args(argv)
    raw = args.certdata.read_bytes()
    text = raw.decode("utf-8")
    version = args.builtins_version or detect_builtins_version(args.certdata, text)
    if version is None:
        print(
            "warning: NSS_BUILTINS_LIBRARY_VERSION not found; pass --builtins-version",
            file=sys.stderr,
        )
        version = "unknown"
    anchors = email_anchors(parse_certdata(text))
    note = source_note(version, hashlib.sha256(raw).hexdigest())
    write_bundle(anchors, args.out, args.sidecar, note)
    dated = sum(1 for root in anchors if root.email_distrust_after is not None)
    print(f"{len(anchors)} email trust anchors, {dated} with email distrust-after")
    return 0


if __name__ == "__main__":
    sys.exit(main())
