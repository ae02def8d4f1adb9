"""The README's door examples, run as written: the Postfix pipe's master.cf argv (with the
install path and Postfix's ${...} expansions filled in) and the curl call to POST /raw."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys

import pytest

from tests.conftest import write_ini
from tests.intakes import bob, stored_fingerprint
from tests.paths import REPO, SPARKY
from tests.servers import start_gunicorn

pytestmark = pytest.mark.slow
README = (REPO / "README.md").read_text("utf-8")
SECTION = README.split("\n### Postfix pipe\n", 1)[1].split("\n### ", 1)[0]
INSTALL = "/srv/smime-collector"


def master_cf() -> list[str]:
    block = SECTION.split("```\n", 2)[1]
    return [line for line in block.splitlines() if line]


def test_the_master_cf_entry_is_the_one_in_contrib() -> None:
    entry = master_cf()
    assert entry[0].split()[:8] == ["smime", "unix", "-", "n", "n", "-", "4", "pipe"]
    contrib = (REPO / "contrib" / "postfix-pipe.cf").read_text("utf-8").splitlines()
    assert all(line in contrib for line in entry)
    assert "collect@inbound.example.com  smime:" in SECTION
    assert "#   collect@inbound.example.com  smime:" in contrib


def test_the_master_cf_argv_runs_as_postfix_runs_it(tmp_path, dns) -> None:
    case = bob()
    ini = write_ini(
        tmp_path / "webapp.ini",
        {"user-certs-dir": "certs", "log-file": "pipe.log", "dns-nameservers": dns.nameserver,
         **case.settings},
    )  # fmt: skip
    flags = master_cf()[1].split()
    assert flags[0] == "flags=q"  # no F, O, R or D: nothing is added to the message
    argv = shlex.split(master_cf()[1].split("argv=", 1)[1])
    expand = {
        f"{INSTALL}/.venv/bin/python": sys.executable,
        f"{INSTALL}/readSMIMEsig.py": str(REPO / "readSMIMEsig.py"),
        f"{INSTALL}/webapp.ini": str(ini),
        "${sender}": "bob.lumreeker@gmail.com",
        "${recipient}": "collect@inbound.example.com",
    }
    command = [expand.get(arg, arg) for arg in argv]
    assert command[2:4] == ["--pipe", "--config"]
    proc = subprocess.run(
        command, input=case.raw, capture_output=True, env={"LANG": "C"}, cwd=tmp_path, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert stored_fingerprint(tmp_path / "certs", case.email) == case.fingerprint


def test_the_raw_curl_example_answers_as_shown(tmp_path, dns) -> None:
    curl = shutil.which("curl")
    if curl is None:
        pytest.fail("curl is not installed")
    section = README.split("\n### Any other source: `POST /raw`\n", 1)[1]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    command_text, shown = block.split("\n# ", 1)
    case = bob()
    ini = write_ini(
        tmp_path / "webapp.ini",
        {"user-certs-dir": "certs", "log-file": "webapp.log", "dns-nameservers": dns.nameserver,
         "raw-token": "the-raw-token", **case.settings},
    )  # fmt: skip
    server = start_gunicorn(ini, tmp_path, workers=1)
    try:
        argv = shlex.split(command_text.replace("\\\n", " "))
        argv = [
            arg.replace("http://127.0.0.1:8855/", server.url).replace(
                "<raw-token>", "the-raw-token"
            )
            for arg in argv
        ]
        shutil.copy(SPARKY / "signed-from-bob.eml", tmp_path / "signed-from-bob.eml")
        proc = subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path, timeout=60)
    finally:
        server.stop()
    assert argv[0] == "curl"
    assert json.loads(proc.stdout) == json.loads(shown.strip())
