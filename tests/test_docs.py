"""The README documents every reason code and configuration key exactly as the code defines them."""

from __future__ import annotations

import re

from smime_collector.config import keys
from smime_collector.verdict import Reason
from tests.paths import REPO

README = (REPO / "README.md").read_text("utf-8")
INI = (REPO / "webapp.ini").read_text("utf-8")


def test_reason_table_matches_the_code() -> None:
    table = dict(re.findall(r"^\| `([a-z-]+)` \| (.+?) \|$", README, re.MULTILINE))
    for reason in Reason:
        assert table.get(reason.value) == reason.explanation, reason.value


def test_every_config_key_is_documented() -> None:
    for spec in keys():
        assert f"| `{spec.name}` |" in README, spec.name
        assert spec.name in INI, spec.name
