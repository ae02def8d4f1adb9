"""The README documents every reason code and configuration key exactly as the code defines them."""

from __future__ import annotations

import importlib
import re

from prometheus_client.metrics import MetricWrapperBase

import smime_collector
from smime_collector import metrics
from smime_collector.config import keys
from smime_collector.metrics import DEPRECATED
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


def test_changelog_names_every_deprecated_metric_and_its_replacement() -> None:
    changelog = (REPO / "CHANGELOG.md").read_text("utf-8")
    assert f"## {smime_collector.__version__} " in changelog
    for old, new in DEPRECATED.items():
        row = re.search(rf"^\| `{old}(?:\{{\w+\}})?` \| `([^`]+)` \|$", changelog, re.MULTILINE)
        assert row, old
        assert row[1].split("{")[0] == new, old
        assert old in README and new.removesuffix("_count") in README, old


def test_readme_lists_every_metric() -> None:
    exposed = [
        m._name + ("_total" if m._type == "counter" else "")
        for m in vars(metrics).values()
        if isinstance(m, MetricWrapperBase)
    ]
    exposed += [
        "smime_build_info",
        "smime_certificates_stored",
        "smime_certificate_earliest_expiry_timestamp_seconds",
    ]
    for name in exposed:
        assert f"`{name}" in README, name


def test_the_readme_shows_the_page() -> None:
    shots = re.findall(r"!\[[^\]]+\]\((docs/screenshots/[\w-]+\.png)\)", README)
    assert len(shots) >= 3
    for shot in shots:
        assert (REPO / shot).read_bytes().startswith(b"\x89PNG\r\n\x1a\n"), shot


def test_every_constant_in_the_limits_table_exists() -> None:
    """Each bound the security table names (``module.NAME``, or ``NAME`` after one of the
    same module) is a real attribute of that module: an operator looking it up finds it."""
    section = README.split("### Limits on hostile input", 1)[1].split("\n\n| case |", 1)[0]
    rows = [line.split("|")[1:-1] for line in section.splitlines() if line.startswith("| ")]
    checked = 0
    for limit, constant, _value, _over in rows[2:]:
        module = None
        for name in re.findall(r"`([^`]+)`", constant):
            if "." in name:
                module_name, _, name = name.rpartition(".")
                module = importlib.import_module(f"smime_collector.{module_name}")
            elif not re.fullmatch(r"[A-Z][A-Z0-9_]+", name):
                continue  # a configuration key or flag: checked against config.keys()
            assert module is not None and hasattr(module, name), (limit, name)
            checked += 1
    assert checked >= 30
