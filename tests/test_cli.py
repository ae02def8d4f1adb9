"""The ``smime-collector`` command in the project's venv, and its twin ``readSMIMEsig.py``.

The two run the same code: the same verdicts, lines and exit codes for the same mail, the same
``check-config`` report. The installed-from-a-wheel command is tested in test_packaging.py.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import smtplib
import subprocess
import sys
import time
from pathlib import Path

import pytest

import smime_collector
from smime_collector.cli import COMMANDS
from smime_collector.store import FolderStore
from tests import pki
from tests.conftest import write_ini
from tests.helpers import run_cli
from tests.mailfactory import MailFactory
from tests.paths import REPO, SHARED, THUNDERBIRD
from tests.servers import free_port

COMMAND = Path(sys.prefix) / "bin" / "smime-collector"
VERSION = smime_collector.__version__


def smime_collector_cmd(
    *args: str | Path, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    if not COMMAND.exists():
        pytest.fail(f"{COMMAND} is missing: the venv installs the project (make test does)")
    return subprocess.run(
        [str(COMMAND), *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=300
    )


def test_version_everywhere() -> None:
    assert smime_collector_cmd("--version").stdout == f"smime-collector {VERSION}\n"
    present = [name for name, module in COMMANDS.items() if importlib.util.find_spec(module)]
    for name in present:
        done = smime_collector_cmd(name, "--version")
        assert (done.returncode, done.stdout) == (0, f"smime-collector {name} {VERSION}\n")
    module = subprocess.run(
        [sys.executable, "-m", "smime_collector", "--version"], capture_output=True, text=True
    )
    assert module.stdout == f"smime-collector {VERSION}\n"
    # The python -m twins the README names answer it too, with this program's version.
    for name in ("smtpd", "serve"):
        twin = subprocess.run(
            [sys.executable, "-m", f"smime_collector.{name}", "--version"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert (twin.returncode, twin.stdout) == (0, f"smime-collector {name} {VERSION}\n")
    assert run_cli("--version").stdout == f"readSMIMEsig.py {VERSION}\n"


def test_subcommands_are_those_whose_modules_exist() -> None:
    """recheck, export, import and smtpd are registered the day their modules land."""
    help_text = smime_collector_cmd("--help").stdout
    present = {name for name, module in COMMANDS.items() if importlib.util.find_spec(module)}
    assert {"serve", "judge", "check-config"} <= present
    listed = {name for name in COMMANDS if re.search(rf"^    {name}\b", help_text, re.MULTILINE)}
    assert listed == present, help_text
    for missing in set(COMMANDS) - present:
        done = smime_collector_cmd(missing)
        assert done.returncode == 2 and "invalid choice" in done.stderr


def test_judge_without_mail_is_a_usage_error() -> None:
    done = smime_collector_cmd("judge")
    assert done.returncode == 2
    assert "EMLFILE" in done.stderr


def readme_command(prefix: str) -> list[str]:
    """A README command line starting ``prefix``, split, with this venv and corpus put in."""
    readme = (REPO / "README.md").read_text("utf-8")
    (line,) = [line for line in readme.splitlines() if line.startswith(prefix)]
    line = line.replace(".venv/bin/smime-collector", str(COMMAND))
    return line.replace("../shared", str(SHARED)).split()


def test_the_readme_judge_command_matches_readsmimesig(tmp_path) -> None:
    shutil.copy(REPO / "webapp.ini", tmp_path / "webapp.ini")
    args = readme_command(".venv/bin/smime-collector judge --config webapp.ini --json ../shared")
    new = subprocess.run(args, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    old = run_cli("--config", "webapp.ini", "--json", *args[5:], cwd=tmp_path)
    assert (new.returncode, new.stdout) == (old.returncode, old.stdout)
    (verdict,) = [json.loads(line) for line in new.stdout.splitlines()]
    assert verdict["file"] == str(THUNDERBIRD / "alice.sig.SHA256.opaque.eml")
    assert verdict["outcome"] in ("stored", "rejected")
    assert ",judge,INFO," in (tmp_path / "webapp.log").read_text()  # the log names the program


def test_check_config_matches_the_seeds_flag(tmp_path) -> None:
    shutil.copy(REPO / "webapp.ini", tmp_path / "webapp.ini")
    args = readme_command(".venv/bin/smime-collector check-config --config webapp.ini")
    new = subprocess.run(args, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    old = run_cli("--check-config", "--config", "webapp.ini", cwd=tmp_path)
    assert new.returncode == old.returncode
    assert new.stdout.splitlines()[:3] == old.stdout.splitlines()[:3]  # config, anchors, store
    assert "WARN x-messagesystems-webhook-token: is the sample token" in new.stdout


def test_the_readme_smtpd_command_serves_and_stops_on_sigterm(tmp_path) -> None:
    shutil.copy(REPO / "webapp.ini", tmp_path / "webapp.ini")
    port = free_port()
    env = {**os.environ, "SMIME_COLLECTOR_SMTP_LISTEN": f"127.0.0.1:{port}"}
    args = readme_command(".venv/bin/smime-collector smtpd --config webapp.ini")
    server = subprocess.Popen(args, cwd=tmp_path, env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with smtplib.SMTP("127.0.0.1", port, timeout=5) as client:
                    code, _banner = client.ehlo("test.example")
                break
            except OSError:
                assert server.poll() is None, server.stderr.read()
                assert time.monotonic() < deadline, "smtpd never answered"
                time.sleep(0.1)
        assert code == 250
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0


def test_recheck_matches_the_seeds_flag(tmp_path, dns_server) -> None:
    """Both validate the stored certificates again and print the same lines."""
    mail = MailFactory.create(dns_server, tmp_path)
    ini = write_ini(
        tmp_path / "webapp.ini",
        {
            "user-certs-dir": "certs",
            "log-file": "webapp.log",
            "trusted-certs": str(mail.ca_file),
            "revocation-fetch": "no",
        },
    )
    store = FolderStore(tmp_path / "certs")
    for address in ("ann@example.org", "ben@example.org"):
        assert store.save(address, pki.make_leaf(mail.root, address, key_type="ec").cert).changed
    lines = readme_command(".venv/bin/smime-collector recheck --config webapp.ini --json")
    new = subprocess.run(lines, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    old = run_cli("--config", ini.name, "--recheck", "--json", cwd=tmp_path)
    assert (new.returncode, new.stdout) == (old.returncode, old.stdout)
    assert [json.loads(line)["email"] for line in new.stdout.splitlines()] == [
        "ann@example.org",
        "ben@example.org",
    ]
    assert ",recheck,INFO," in (tmp_path / "webapp.log").read_text()


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("--recheck", "--export", "{out}"), ("--recheck", "--export")),
        (("--export", "{out}", "--recheck"), ("--recheck", "--export")),
        (("--recheck", "--check-config"), ("--recheck", "--check-config")),
        (("--check-config", "{mail}"), ("--check-config", "EMLFILE")),
        (("--recheck", "{mail}"), ("--recheck", "EMLFILE")),
        (("--import", "{folder}", "--recheck"), ("--recheck", "--import")),
        (("--export", "{out}", "--import", "{folder}"), ("--export", "--import")),
        (("--import", "{folder}", "{mail}"), ("--import", "EMLFILE")),
    ],
)
def test_readsmimesig_modes_exclude_each_other(tmp_path, args, named) -> None:
    """One mode per run: a second one is a usage error naming both, and nothing is done (no
    recheck printed, no export written), instead of one of them being silently ignored."""
    ini = write_ini(tmp_path / "webapp.ini", {"log-file": "webapp.log"})
    folder = tmp_path / "folder"
    folder.mkdir()
    mail = tmp_path / "message.eml"
    mail.write_bytes(b"From: a@example.org\r\n\r\nnot signed\r\n")
    out = tmp_path / "export"
    values = {"out": out, "folder": folder, "mail": mail}
    proc = run_cli("--config", ini, *(arg.format(**values) for arg in args), cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stdout == ""
    (line,) = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert all(name in line for name in named), line
    assert not out.exists()
    assert not (tmp_path / "certs").exists()


@pytest.mark.parametrize("mode", [("--recheck",), ("--check-config",), ("--export", "out")])
def test_the_pipe_with_another_mode_defers_with_a_usage_error(tmp_path, mode) -> None:
    """--pipe keeps its own rule, 0 or 75 only: another mode beside it is 75 (Postfix retries
    and the operator reads why), never 2, which Postfix would turn into a bounce."""
    ini = write_ini(tmp_path / "webapp.ini", {"log-file": "webapp.log"})
    proc = subprocess.run(
        [sys.executable, str(REPO / "readSMIMEsig.py"), "--pipe", "--config", str(ini), *mode],
        input=b"From: a@example.org\r\n\r\nx\r\n",
        capture_output=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert proc.returncode == 75
    assert mode[0].encode() in proc.stderr and b"error" in proc.stderr
    assert not (tmp_path / "out").exists()
