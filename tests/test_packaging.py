"""The package as an operator gets it: built, installed into a fresh venv, run from elsewhere.

Nothing here reaches the network: pip installs from the wheelhouse ``make`` downloaded once
(``.venv/wheels``, every file the locks name, checked against their hashes), through
``PIP_NO_INDEX`` and ``PIP_FIND_LINKS`` so the README's commands run exactly as written. The
installed service runs from an empty folder, so nothing can come from the checkout.
"""

from __future__ import annotations

import email.parser
import glob
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest

import smime_collector
from tests.paths import REPO, SPARKY
from tests.servers import free_port

pytestmark = pytest.mark.slow

WHEELS = Path(sys.prefix) / "wheels"
README = (REPO / "README.md").read_text("utf-8")
#: What a source copy leaves out: what the checkout grows, never what it ships.
NOT_SOURCE = shutil.ignore_patterns(
    ".git",
    ".venv",
    "node_modules",
    "__pycache__",
    ".pytest_cache",
    ".ruff_cache",
    "build",
    "*.egg-info",
    "certs",
    "webapp.log*",
    "gunicorn*.log",
    ".system-deps",
)


def offline_env(**extra: str) -> dict[str, str]:
    if not any(WHEELS.glob("flask-*.whl")):
        pytest.fail(f"{WHEELS} has no wheels: create the venv with `make test`, which fills it")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.update(PIP_NO_INDEX="1", PIP_FIND_LINKS=str(WHEELS), PIP_DISABLE_PIP_VERSION_CHECK="1")
    env.update(extra)
    return env


def run(command: str, cwd: Path, env: dict[str, str], timeout: int = 300) -> str:
    done = subprocess.run(
        ["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def readme_block(starting: str) -> list[str]:
    """The commands of the README's ``sh`` block whose first line starts with ``starting``
    (continuation lines joined), and its ``# ...`` output lines."""
    for block in re.findall(r"```sh\n(.*?)```", README, re.DOTALL):
        if block.startswith(starting):
            return block.replace("\\\n", "").splitlines()
    pytest.fail(f"the README has no sh block starting {starting!r}")


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """The project as a release tarball holds it."""
    target = tmp_path_factory.mktemp("src") / "smime-collector"
    shutil.copytree(REPO, target, ignore=NOT_SOURCE)
    return target


@pytest.fixture(scope="module")
def installed(source) -> Path:
    """The README's install commands, as written, in the source copy: the venv's bin."""
    lines = readme_block("python3 -m venv venv")
    commands = [line for line in lines if line and not line.startswith("#")]
    output = ""
    for command in commands:
        output = run(command, source, offline_env())
    expected = [line[2:] for line in lines if line.startswith("# ")]
    assert output.strip() == expected[-1] == f"smime-collector {smime_collector.__version__}"
    return source / "venv" / "bin"


def test_the_wheel_holds_the_package_and_nothing_else(source, tmp_path) -> None:
    run(
        f"{sys.executable} -m pip wheel --quiet --no-deps --wheel-dir {tmp_path} .",
        source,
        offline_env(),
    )
    (wheel,) = tmp_path.glob("smime_collector-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names}
    assert tops == {"smime_collector", f"smime_collector-{smime_collector.__version__}.dist-info"}
    for shipped in (
        "smime_collector/data/smime-ca-bundle.pem",
        "smime_collector/data/smime-ca-bundle.distrust.json",
        "smime_collector/gunicorn_conf.py",
        "smime_collector/ui/templates/ui/dashboard.html",
        "smime_collector/ui/static/ui.css",
    ):
        assert shipped in names, shipped
    info = f"smime_collector-{smime_collector.__version__}.dist-info"
    with zipfile.ZipFile(wheel) as archive:
        metadata = email.parser.Parser().parsestr(archive.read(f"{info}/METADATA").decode())
        entry_points = archive.read(f"{info}/entry_points.txt").decode()
        licensed = archive.read(f"{info}/licenses/LICENSE").decode()
    assert metadata["Requires-Python"] == ">=3.11"
    assert metadata["License-Expression"] == "Apache-2.0"
    assert "Apache License" in licensed and "Version 2.0" in licensed
    assert "smime-collector = smime_collector.cli:main" in entry_points
    pins = {line for line in (REPO / "requirements.txt").read_text().splitlines() if "==" in line}
    runtime = {req for req in metadata.get_all("Requires-Dist") if "extra ==" not in req}
    assert runtime == pins
    assert metadata["Provides-Extra"] == "dev"


def test_the_installed_command_answers_version_on_every_subcommand(installed, tmp_path) -> None:
    command = installed / "smime-collector"
    version = smime_collector.__version__
    help_text = run(f"{command} --help", tmp_path, offline_env())
    for name in ("serve", "judge", "check-config"):
        assert name in help_text
        assert run(f"{command} {name} --version", tmp_path, offline_env()).strip() == (
            f"smime-collector {name} {version}"
        )
    where = run(
        f"{installed / 'python'} -c 'import smime_collector; print(smime_collector.__file__)'",
        tmp_path,
        offline_env(),
    )
    assert where.startswith(str(installed.parent / "lib"))  # the installed copy, not the checkout


def test_the_installed_service_answers_the_readme_curl(installed, tmp_path) -> None:
    """``smime-collector serve`` in a folder holding only the shipped webapp.ini: the app, the
    gunicorn settings, the trust bundle and the page's templates all come from the package."""
    shutil.copy(REPO / "webapp.ini", tmp_path / "webapp.ini")
    port = free_port()
    env = offline_env(
        BIND=f"127.0.0.1:{port}", SMIME_COLLECTOR_UI_TOKEN="installed-ui-token-0123456789"
    )
    server = subprocess.Popen(
        [str(installed / "smime-collector"), "serve"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        health = wait_for(f"http://127.0.0.1:{port}/healthz", server)
        assert '"status":"ok"' in health.replace(" ", "")
        assert re.search(r'"trust_anchors":\s*1\d\d', health)  # the shipped bundle
        lines = readme_block("curl -i http://127.0.0.1:8855/")
        curl = " ".join(line for line in lines if not line.startswith("#"))
        answer = run(curl.replace("8855", str(port)), tmp_path, env)
        status, body = answer.splitlines()[0], answer.splitlines()[-1]
        expected = lines[-1].removeprefix("# ").split()
        assert status.strip() == " ".join(expected[:3])  # HTTP/1.1 200 OK
        assert body.replace(" ", "") == expected[3]  # {"count":0,"message":"OK"}
        page = urllib.request.urlopen(f"http://127.0.0.1:{port}/ui/login", timeout=10).read()
        assert b"Sign in" in page
        css = urllib.request.urlopen(f"http://127.0.0.1:{port}/ui/static/ui.css", timeout=10)
        assert css.status == 200
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert (tmp_path / "certs").is_dir()  # relative to the INI's folder


def test_the_installed_judge_reads_mail(installed, tmp_path) -> None:
    eml = SPARKY / "signed-from-bob.eml"
    done = subprocess.run(
        [str(installed / "smime-collector"), "judge", "--json", str(eml)],
        cwd=tmp_path,
        env=offline_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr  # rejected: Gmail's 2016 key is gone
    assert '"reason": "dkim-invalid"' in done.stdout or '"reason": "expired"' in done.stdout


def wait_for(url: str, process: subprocess.Popen, seconds: float = 30) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(process.stdout.read().decode(errors="replace"))
        try:
            return urllib.request.urlopen(url, timeout=2).read().decode()
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer within {seconds} s")


# -- an older Python is refused with a clear message --------------------------------------------


def older_python() -> str:
    """A real Python older than 3.11 on this machine (pyenv's, or on PATH)."""
    candidates = [shutil.which(f"python3.{minor}") for minor in (10, 9, 8)]
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    candidates += sorted(glob.glob(str(pyenv / "versions" / "3.1[0]*" / "bin" / "python3")))
    candidates += sorted(glob.glob(str(pyenv / "versions" / "3.[89]*" / "bin" / "python3")))
    for candidate in filter(None, candidates):
        probe = subprocess.run(
            [candidate, "-c", "import sys; print(sys.version_info < (3, 11))"],
            capture_output=True,
            text=True,
        )
        if probe.returncode == 0 and probe.stdout.strip() == "True":
            return candidate
    pytest.skip("no Python older than 3.11 on this machine to try")


def test_pip_refuses_an_older_python(source, tmp_path) -> None:
    """The build backend says so before pip resolves any dependency (Requires-Python is in
    the metadata too, see the wheel test, but an older pip stops at a dependency first)."""
    old = older_python()
    subprocess.run([old, "-m", "venv", str(tmp_path / "old")], check=True)
    done = subprocess.run(
        [str(tmp_path / "old" / "bin" / "pip"), "install", str(source)],
        env=offline_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode != 0
    output = done.stdout + done.stderr
    assert "smime-collector needs Python 3.11 or newer, but this is Python 3." in output


def test_make_refuses_an_older_python_before_making_the_venv(tmp_path) -> None:
    old = older_python()
    venv = tmp_path / "venv"
    done = subprocess.run(
        ["make", f"PYTHON={old}", f"VENV={venv}", f"{venv}/bin/.installed"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert "smime-collector needs Python 3.11 or newer" in done.stderr
    assert "make PYTHON=python3.11" in done.stderr
    assert not venv.exists()


# -- the locks ---------------------------------------------------------------------------------


def pins(path: Path) -> dict[str, str]:
    found = {}
    for line in path.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.-]+)==([^\s;\\]+)", line)
        if match:
            found[match[1].lower().replace("_", "-")] = match[2]
    return found


def test_the_locks_pin_every_requirement_with_hashes() -> None:
    runtime, dev = pins(REPO / "requirements.lock"), pins(REPO / "requirements-dev.lock")
    for source, lock in (("requirements.txt", runtime), ("requirements-dev.txt", dev)):
        for name, version in pins(REPO / source).items():
            assert lock.get(name) == version, f"{name}=={version} from {source}: run make lock"
    assert {name: dev[name] for name in runtime} == runtime  # one version of each everywhere
    for lock in ("requirements.lock", "requirements-dev.lock"):
        text = (REPO / lock).read_text()
        entries = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 2)[2])
        assert all("--hash=sha256:" in entry for entry in entries if "==" in entry), lock


def test_the_venv_is_rebuilt_when_the_lock_changes() -> None:
    makefile = (REPO / "Makefile").read_text()
    (rule,) = re.findall(r"^\$\(BIN\)/\.installed: (.*)$", makefile, re.MULTILINE)
    assert "requirements-dev.lock" in rule.split()
    assert "--require-hashes -r requirements-dev.lock" in makefile
