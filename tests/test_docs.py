"""The README documents every reason code exactly as the code defines it."""

from __future__ import annotations

import re

from smime_collector.config import DEFAULTS
from smime_collector.verdict import REASONS
from tests.paths import REPO

README = (REPO / "README.md").read_text("utf-8")
INI = (REPO / "webapp.ini").read_text("utf-8")


def test_reason_table_matches_the_code() -> None:
    table = dict(re.findall(r"^\| `([a-z-]+)` \| (.+?) \|$", README, re.MULTILINE))
    for code, sentence in REASONS.items():
        assert table.get(code) == sentence, code


def test_every_config_key_is_documented() -> None:
    for key in DEFAULTS:
        assert f"| `{key}` |" in README, key
        assert key in INI, key
