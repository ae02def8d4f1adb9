"""Configuration: one table of keys fed by the INI file, the environment and secret files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from smime_collector.config import (
    SAMPLE_TOKEN,
    ConfigError,
    Settings,
    keys,
    load_settings,
)
from smime_collector.serving import server_options
from tests.conftest import write_ini
from tests.helpers import run_cli
from tests.paths import REPO
from tests.servers import free_port, gunicorn_env, start_gunicorn


def test_environment_overrides_the_ini_file(tmp_path) -> None:
    ini = write_ini(tmp_path / "webapp.ini", {"log-level": "INFO", "dkim-alignment": "relaxed"})
    env = {"SMIME_COLLECTOR_LOG_LEVEL": "debug", "SMIME_COLLECTOR_DKIM_ALIGNMENT": "strict"}
    settings = load_settings(ini, environ=env)
    assert (settings.log_level, settings.dkim_alignment) == ("DEBUG", "strict")
    assert load_settings(ini, environ={}).log_level == "INFO"


def test_every_key_has_its_environment_variable(tmp_path) -> None:
    """Each key's variable is its name upper-cased with - as _, and it really is read."""
    for spec in keys():
        assert spec.env == "SMIME_COLLECTOR_" + spec.name.upper().replace("-", "_")
    settings = Settings.from_mapping({}, tmp_path, "test", {"SMIME_COLLECTOR_USER_CERTS_DIR": "x"})
    assert settings.user_certs_dir == tmp_path / "x"


def test_a_secret_comes_from_its_file(tmp_path) -> None:
    (tmp_path / "token").write_text("from a file\n")
    settings = Settings.from_mapping(
        {"x-messagesystems-webhook-token-file": "token", "lookup-token-file": "token"},
        tmp_path,
        "test",
    )
    assert settings.webhook_token == "from a file"
    assert settings.lookup_token == "from a file"
    env = {"SMIME_COLLECTOR_METRICS_TOKEN_FILE": str(tmp_path / "token")}
    assert Settings.from_mapping({}, tmp_path, "test", env).metrics_token == "from a file"


@pytest.mark.parametrize(
    ("values", "needle"),
    [
        ({"lookup-token-file": "absent"}, "lookup-token-file"),
        ({"lookup-token": "x", "lookup-token-file": "token"}, "not both"),
        ({"dkim-file": "token"}, "'dkim-file'"),  # only secrets have a -file twin
        ({"metric-token": "x"}, "'metric-token'"),
        ({"log-format": "xml"}, "log-format"),
    ],
)
def test_config_errors_name_the_key(tmp_path, values, needle) -> None:
    (tmp_path / "token").write_text("t")
    with pytest.raises(ConfigError) as caught:
        Settings.from_mapping(values, tmp_path, "test")
    assert needle in str(caught.value)
    assert "\n" not in str(caught.value)


def test_the_database_keys(tmp_path) -> None:
    (tmp_path / "pw").write_text("s3cret\n")
    values = {
        "store": "PostgreSQL",
        "database-url": "postgresql://collector@db.example:5433/smime",
        "database-password-file": "pw",
    }
    settings = Settings.from_mapping(values, tmp_path, "test")
    assert (settings.store, settings.database_url, settings.database_password) == (
        "postgresql",
        "postgresql://collector@db.example:5433/smime",
        "s3cret",
    )
    assert settings.database_pool_size == 4
    env = {"SMIME_COLLECTOR_DATABASE_POOL_SIZE": "8", "SMIME_COLLECTOR_STORE": "folder"}
    settings = Settings.from_mapping(values, tmp_path, "test", env)
    assert (settings.store, settings.database_pool_size) == ("folder", 8)
    assert Settings.from_mapping({}, tmp_path, "test").store == "folder"


@pytest.mark.parametrize(
    ("values", "needle"),
    [
        ({"store": "postgresql"}, "store = postgresql needs database-url"),
        ({"store": "mysql"}, "store must be one of folder, postgresql"),
        ({"database-url": "mysql://x@y/z"}, "database-url must look like postgresql://"),
        ({"database-url": "postgresql://x@y:port/z"}, "database-url has a bad port"),
        ({"database-url": "postgresql://x@y:5432/"}, "database-url must name the database"),
        ({"database-password-file": "absent"}, "database-password-file: cannot read"),
        ({"database-pool-size": "0"}, "database-pool-size must be a positive number"),
    ],
)
def test_database_key_errors_name_the_key(tmp_path, values, needle) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_mapping(values, tmp_path, "test")
    assert needle in str(info.value)
    assert "\n" not in str(info.value)


def test_an_unknown_environment_variable_is_refused(tmp_path) -> None:
    with pytest.raises(ConfigError, match="SMIME_COLLECTOR_METRIC_TOKEN"):
        Settings.from_mapping({}, tmp_path, "test", {"SMIME_COLLECTOR_METRIC_TOKEN": "x"})


def test_the_shipped_ini_holds_only_the_sample_token() -> None:
    settings = load_settings(REPO / "webapp.ini", environ={})
    assert settings.webhook_token == SAMPLE_TOKEN
    assert (settings.metrics_token, settings.lookup_token) == ("", "")
    assert ("x-messagesystems-webhook-token", settings.risks()[0][1]) == settings.risks()[0]


def test_check_config_warns_about_risky_settings(tmp_path, dns) -> None:
    ini = write_ini(
        tmp_path / "webapp.ini",
        {
            "x-messagesystems-webhook-token": SAMPLE_TOKEN,
            "dkim": "off",
            "verify-time": "2018-11-30T18:57:08Z",
            "allow-sha1": "yes",
            "dns-nameservers": dns.nameserver,
            "dns-timeout": "1",
        },
    )
    proc = run_cli("--check-config", "--config", ini, cwd=tmp_path)
    warned = [line.split(":")[0] for line in proc.stdout.splitlines() if line.startswith("WARN ")]
    assert warned == [
        "WARN x-messagesystems-webhook-token",
        "WARN dkim",
        "WARN verify-time",
        "WARN allow-sha1",
    ]
    assert proc.returncode == 0, proc.stdout  # warnings, not failures


# -- gunicorn's own settings ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"WEB_CONCURRENCY": "four"}, "WEB_CONCURRENCY must be a whole number"),
        ({"WEB_CONCURRENCY": "0"}, "WEB_CONCURRENCY must be a whole number"),
        ({"GUNICORN_TIMEOUT": "soon"}, "GUNICORN_TIMEOUT"),
        ({"TLS_CERT": "cert.pem"}, "TLS_CERT is set but TLS_KEY is not"),
        ({"TLS_KEY": "key.pem"}, "TLS_KEY is set but TLS_CERT is not"),
        ({"TLS_CERT": "absent.pem", "TLS_KEY": "absent.key"}, "TLS_CERT: absent.pem"),
        ({"GUNICORN_WORKER_CLASS": "bogus"}, "GUNICORN_WORKER_CLASS must be one of"),
        ({"GUNICORN_WORKER_CLASS": "no_such_module.Worker"}, "GUNICORN_WORKER_CLASS"),
        ({"GUNICORN_WORKER_CLASS": "gunicorn.workers.sync.NoSuchWorker"}, "NoSuchWorker"),
        ({"GUNICORN_WORKER_CLASS": "json.JSONDecoder"}, "is not a gunicorn worker"),
    ],
)
def test_bad_server_settings_are_one_line(env, needle) -> None:
    with pytest.raises(ConfigError, match=needle) as raised:
        server_options(env)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(
    "worker_class",
    ["sync", "gthread", "gunicorn.workers.gthread.ThreadWorker"],
)
def test_gunicorn_worker_classes_by_name_or_path_are_accepted(worker_class) -> None:
    options = server_options({"GUNICORN_WORKER_CLASS": worker_class})
    assert options.worker_class == worker_class


@pytest.mark.slow
@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"WEB_CONCURRENCY": "four"}, "WEB_CONCURRENCY"),
        ({"TLS_CERT": "cert.pem"}, "TLS_KEY"),
        ({"GUNICORN_WORKER_CLASS": "bogus"}, "GUNICORN_WORKER_CLASS"),
        ({"SMIME_COLLECTOR_METRIC_TOKEN": "x"}, "SMIME_COLLECTOR_METRIC_TOKEN"),
        # a folder that cannot be made: the INI file is a file, not a folder
        ({"SMIME_COLLECTOR_LOG_FILE": "webapp.ini/logs/webapp.log"}, "log-file"),
    ],
)
def test_gunicorn_refuses_to_start_with_one_line(tmp_path, env, needle) -> None:
    ini = write_ini(tmp_path / "webapp.ini", {"log-file": "webapp.log"})
    proc = subprocess.run(
        [sys.executable, "-m", "smime_collector.serve"],
        cwd=REPO,
        env={**gunicorn_env(ini, free_port(), 1, tmp_path), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if "configuration error" in line]
    assert len(lines) == 1 and needle in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_gunicorn_reads_the_token_from_a_secret_file(tmp_path: Path) -> None:
    secret = tmp_path / "relay-token"
    secret.write_text("from-the-secret-file\n")
    ini = write_ini(tmp_path / "webapp.ini", {"log-file": "webapp.log"})
    env = {"SMIME_COLLECTOR_X_MESSAGESYSTEMS_WEBHOOK_TOKEN_FILE": str(secret)}
    server = start_gunicorn(ini, tmp_path, workers=1, env=env)
    try:
        import urllib.request

        def post(token: str) -> int:
            request = urllib.request.Request(
                server.url,
                data=b"[]",
                headers={
                    "Content-Type": "application/json",
                    "X-MessageSystems-Webhook-Token": token,
                },
            )
            try:
                return urllib.request.urlopen(request, timeout=10).status
            except urllib.error.HTTPError as exc:
                return exc.code

        assert post("from-the-secret-file") == 200
        assert post(SAMPLE_TOKEN) == 401
    finally:
        server.stop()


def test_a_secret_in_the_environment_wins_over_the_ini_file(tmp_path) -> None:
    """The environment wins over the INI file for secrets too, in either form: the shipped
    webapp.ini sets the sample token, and the README's systemd credential
    (``SMIME_COLLECTOR_X_MESSAGESYSTEMS_WEBHOOK_TOKEN_FILE``) must replace it, not clash."""
    (tmp_path / "token").write_text("from a file\n")
    ini = write_ini(
        tmp_path / "webapp.ini",
        {"x-messagesystems-webhook-token": SAMPLE_TOKEN, "lookup-token-file": "token"},
    )
    env = {
        "SMIME_COLLECTOR_X_MESSAGESYSTEMS_WEBHOOK_TOKEN_FILE": str(tmp_path / "token"),
        "SMIME_COLLECTOR_LOOKUP_TOKEN": "from the environment",
    }
    settings = load_settings(ini, environ=env)
    assert settings.webhook_token == "from a file"
    assert settings.lookup_token == "from the environment"
    both = {
        "SMIME_COLLECTOR_LOOKUP_TOKEN": "x",
        "SMIME_COLLECTOR_LOOKUP_TOKEN_FILE": str(tmp_path / "token"),
    }
    with pytest.raises(ConfigError, match="not both"):
        load_settings(ini, environ=both)


#: Every entry point that reads the configuration and stops on a bad one, with the exit code
#: it stops with (the Postfix pipe defers rather than bounce).
ENTRY_POINTS = {
    "serve": ([sys.executable, "-m", "smime_collector.serve"], 2),
    "judge": ([sys.executable, "-m", "smime_collector", "judge", "--config", "{ini}", "x"], 2),
    "readSMIMEsig": ([sys.executable, "readSMIMEsig.py", "--config", "{ini}", "x"], 2),
    "recheck": ([sys.executable, "-m", "smime_collector", "recheck", "--config", "{ini}"], 2),
    "smtpd": ([sys.executable, "-m", "smime_collector.smtpd", "--config", "{ini}"], 2),
    "pipe": ([sys.executable, "readSMIMEsig.py", "--pipe", "--config", "{ini}"], 75),
    "export": ([sys.executable, "-m", "smime_collector", "export", "--config", "{ini}", "x"], 2),
}
#: Keys whose bad value every entry point above must name (export reads no trust anchors).
START_UP_ERRORS = {
    # a folder that cannot be made: the INI file is a file, not a folder
    "user-certs-dir": ({"user-certs-dir": "webapp.ini/certs"}, list(ENTRY_POINTS)),
    "trusted-certs": (
        {"trusted-certs": "absent-bundle.pem"},
        [e for e in ENTRY_POINTS if e != "export"],
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("key", "entry"),
    [(key, entry) for key, (_, entries) in START_UP_ERRORS.items() for entry in entries],
)
def test_start_up_errors_name_their_key_at_every_entry_point(tmp_path, key, entry) -> None:
    values = START_UP_ERRORS[key][0]
    ini = write_ini(
        tmp_path / "webapp.ini",
        {"log-file": "webapp.log", "smtp-listen": f"127.0.0.1:{free_port()}", **values},
    )
    command, code = ENTRY_POINTS[entry]
    proc = subprocess.run(
        [part.format(ini=ini) for part in command],
        cwd=REPO,
        env=gunicorn_env(ini, free_port(), 1, tmp_path),
        input="",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == code, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if "configuration error" in line]
    assert len(lines) == 1 and f"configuration error: {key}: " in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_log_file_that_cannot_be_written_is_a_configuration_error(tmp_path) -> None:
    """The CLI names the key too, not only the errno of the folder it could not make."""
    ini = write_ini(tmp_path / "webapp.ini", {"log-file": "webapp.ini/logs/webapp.log"})
    proc = run_cli("--config", ini, REPO / "README.md")
    assert proc.returncode == 2, proc.stderr
    assert "configuration error: log-file: cannot write" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
