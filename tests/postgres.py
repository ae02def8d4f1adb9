"""A throwaway PostgreSQL cluster on 127.0.0.1 for the tests and the benchmark.

``initdb`` in a temporary folder, the server on a free port listening on 127.0.0.1 only, and a
Unix socket in the same folder; stopped by its pid and deleted afterwards. PostgreSQL refuses
to run as root (and CI runs as root), so as root both run as the ``postgres`` user that Debian's
``postgresql`` package creates (the Makefile installs it); as anyone else, as that user. The
server process is started directly (no ``pg_ctl``), so the pid the tests hold is the server's.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from tests.servers import free_port, stop_process

USER = "collector"
PASSWORD = "collector-test-password"
SUPERUSER = "postgres"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


class PostgresMissing(RuntimeError):
    pass


def bin_dir() -> Path:
    """Where ``initdb`` and ``postgres`` are: Debian keeps them off PATH, per version."""
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/postgres"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if versions:
        return versions[-1].parent
    found = shutil.which("postgres") or shutil.which("initdb")
    if found:
        return Path(found).parent
    raise PostgresMissing(
        "PostgreSQL's server programs are not installed: `make test` installs Debian's "
        "postgresql package (apt-get install postgresql)"
    )


def _run_as() -> dict[str, Any]:
    """Popen arguments that drop root to the ``postgres`` user (a no-op for anyone else)."""
    if os.geteuid() != 0:
        return {}
    try:
        account = pwd.getpwnam(SUPERUSER)
    except KeyError:
        raise PostgresMissing(
            "running as root, but there is no 'postgres' user to run PostgreSQL as: "
            "install Debian's postgresql package"
        ) from None
    return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}


@dataclass
class Postgres:
    """One cluster: ``start()``, ``stop()`` (by pid), ``start()`` again, ``destroy()``."""

    folder: Path
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    databases: int = field(default=0)

    @property
    def data(self) -> Path:
        return self.folder / "data"

    @property
    def log(self) -> Path:
        return self.folder / "server.log"

    @classmethod
    def create(cls) -> Postgres:
        """A new cluster with a password-protected role ``collector`` allowed to create
        databases; not started."""
        binaries = bin_dir()
        folder = Path(tempfile.mkdtemp(prefix="smime-pg-"))
        cluster = cls(folder)
        run_as = _run_as()
        if run_as:
            os.chown(folder, run_as["user"], run_as["group"])
        (folder / "pwfile").write_text(PASSWORD + "\n")
        if run_as:
            os.chown(folder / "pwfile", run_as["user"], run_as["group"])
        proc = subprocess.run(
            [
                str(binaries / "initdb"),
                "--pgdata",
                str(cluster.data),
                "--username",
                SUPERUSER,
                "--pwfile",
                str(folder / "pwfile"),
                "--auth-local",
                "trust",
                "--auth-host",
                "scram-sha-256",
                "--encoding",
                "UTF8",
                "--locale",
                "C.UTF-8",
                "--no-sync",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=folder,
            check=False,
            **run_as,
        )
        if proc.returncode != 0:
            shutil.rmtree(folder, ignore_errors=True)
            raise RuntimeError(f"initdb failed: {proc.stdout}{proc.stderr}")
        return cluster

    def start(self) -> Postgres:
        """Start the server (on the same port as before, when restarted) and wait until it
        accepts connections."""
        if self.process is not None and self.process.poll() is None:
            return self
        for attempt in range(3):
            if not self.port or attempt:
                self.port = free_port()
            log = self.log.open("ab")
            self.process = subprocess.Popen(
                [
                    str(bin_dir() / "postgres"),
                    "-D",
                    str(self.data),
                    "-p",
                    str(self.port),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    f"unix_socket_directories={self.folder}",
                    "-c",
                    "fsync=off",  # a throwaway cluster: speed over crash safety
                    "-c",
                    "max_connections=200",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.folder,
                **_run_as(),
            )
            log.close()
            if self._wait_ready():
                if attempt == 0 and self.databases == 0:
                    self._create_role()
                return self
            self.stop()
        raise RuntimeError(f"PostgreSQL did not start: {self.log.read_text(errors='replace')}")

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                return False
            try:
                with psycopg.connect(self.superuser_url("postgres"), connect_timeout=2):
                    return True
            except psycopg.OperationalError:
                time.sleep(0.1)
        return False

    def _create_role(self) -> None:
        with psycopg.connect(self.superuser_url("postgres"), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (USER,)).fetchone()
            if not exists:
                conn.execute(
                    f"CREATE ROLE {USER} LOGIN CREATEDB PASSWORD '{PASSWORD}'"  # test constant
                )

    def superuser_url(self, dbname: str) -> str:
        """Over the Unix socket with trust authentication (the cluster's own user)."""
        return f"host={self.folder} port={self.port} user={SUPERUSER} dbname={dbname}"

    def url(self, dbname: str, with_password: bool = False) -> str:
        """``postgresql://collector@127.0.0.1:<port>/<dbname>``: the form ``database-url``
        takes; the password only ``with_password``."""
        secret = f":{PASSWORD}" if with_password else ""
        return f"postgresql://{USER}{secret}@127.0.0.1:{self.port}/{dbname}"

    def new_database(self, prefix: str = "test") -> str:
        """A fresh, empty database owned by ``collector``; returns its name."""
        self.databases += 1
        name = f"{prefix}_{os.getpid()}_{self.databases}"
        with psycopg.connect(self.superuser_url("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" OWNER {USER}')
        return name

    def stop(self) -> None:
        """Fast shutdown by pid (SIGINT), then SIGKILL if it does not go."""
        process, self.process = self.process, None
        if process is not None:
            stop_process(process, STOP_TIMEOUT, signal.SIGINT)

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


@contextlib.contextmanager
def running_postgres() -> Any:
    """A started cluster, destroyed afterwards whatever happens."""
    cluster = Postgres.create()
    try:
        yield cluster.start()
    finally:
        cluster.destroy()
