"""One settings object: every key defined once, fed by the INI file, the environment and files.

Each configuration key is a field of :class:`Settings` declared with :func:`key`: its INI name,
its default, how its text is read, and whether it is a secret. That one declaration drives
everything else: INI parsing, the ``SMIME_COLLECTOR_<KEY>`` environment variables (upper case,
``-`` → ``_``), the ``<key>-file`` variant of every secret, the documentation check and
``--check-config``. Sources, later ones winning: built-in default, INI file, environment.

Every problem is a :class:`ConfigError` whose text is one line naming the key, so a bad
configuration stops the service before it answers anything, instead of surfacing later as a 500
or, worse, as a setting silently ignored (a misspelt ``metric-token`` once left ``/metrics``
open). Relative paths are resolved against the folder of the INI file.
"""

from __future__ import annotations

import configparser
import dataclasses
import ipaddress
import os
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from smime_collector import resources

SECTION = "webapp"
DEFAULT_INI = "webapp.ini"
ENV_PREFIX = "SMIME_COLLECTOR_"
FILE_SUFFIX = "-file"
#: The token the shipped ``webapp.ini`` and the README use: fine for trying it, never for real.
SAMPLE_TOKEN = "t0p s3cr3t t0k3n"
#: Below this, ``ui-token`` gets a warning: sign-in is rate-limited, not impossible to guess.
MIN_UI_TOKEN_LENGTH = 20


class ConfigError(Exception):
    """A one-line, key-naming description of what is wrong with the configuration."""


@dataclass(frozen=True)
class Context:
    """What a reader of one key's text needs besides the text: where relative paths start and
    how to name the source in an error."""

    base: Path
    source: str


Reader = Callable[[str, str, Context], Any]


@dataclass(frozen=True)
class Key:
    """One configuration key: its INI name, default text, reader and whether it is secret."""

    name: str
    default: str
    read: Reader
    secret: bool = False

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper().replace("-", "_")


def key(name: str, default: str, read: Reader, *, secret: bool = False) -> Any:
    """Declare a :class:`Settings` field as the configuration key ``name``."""
    return field(metadata={"key": Key(name, default, read, secret)})


# -- readers: (key name, raw text, context) -> value; each raises ConfigError naming the key ----


def text(_name: str, raw: str, _ctx: Context) -> str:
    return raw.strip()


def path(name: str, raw: str, ctx: Context) -> Path:
    raw = raw.strip()
    if not raw:
        raise ConfigError(f"{ctx.source}: {name} must not be empty")
    return _resolve(raw, ctx)


def optional_path(name: str, raw: str, ctx: Context) -> Path | None:
    return path(name, raw, ctx) if raw.strip() else None


def optional_file(name: str, raw: str, ctx: Context) -> Path | None:
    """A file that must exist when named: a missing TLS key is a start-up error, not a 500."""
    found = optional_path(name, raw, ctx)
    if found is not None and not found.is_file():
        raise ConfigError(f"{ctx.source}: {name}: {found} is not a readable file")
    return found


def log_target(name: str, raw: str, ctx: Context) -> Path | None:
    """A log file, or ``-`` (``None``) for standard error, where journald picks it up."""
    return None if raw.strip() == "-" else path(name, raw, ctx)


def paths(name: str, raw: str, ctx: Context) -> tuple[Path, ...]:
    return tuple(_resolve(item, ctx) for item in _items(raw))


def bundles(name: str, raw: str, ctx: Context) -> tuple[Path, ...]:
    """Trust bundles: files, where the word ``shipped`` stands for the bundle inside the
    package, so an installed service and a checkout name it the same way."""
    found = tuple(
        resources.SHIPPED_BUNDLE if item == resources.SHIPPED_BUNDLE_NAME else _resolve(item, ctx)
        for item in _items(raw)
    )
    if not found:
        raise ConfigError(f"{ctx.source}: {name} must name at least one file")
    return found


def items(_name: str, raw: str, _ctx: Context) -> tuple[str, ...]:
    return tuple(_items(raw))


def choice(*allowed: str, upper: bool = False) -> Reader:
    def read(name: str, raw: str, ctx: Context) -> str:
        value = raw.strip().upper() if upper else raw.strip().lower()
        if value not in allowed:
            raise ConfigError(
                f"{ctx.source}: {name} must be one of {', '.join(allowed)}, not {raw.strip()!r}"
            )
        return value

    return read


def boolean(name: str, raw: str, ctx: Context) -> bool:
    value = raw.strip().lower()
    if value in ("yes", "true", "on", "1"):
        return True
    if value in ("no", "false", "off", "0", ""):
        return False
    raise ConfigError(f"{ctx.source}: {name} must be yes or no, not {raw.strip()!r}")


def positive(kind: type[int] | type[float]) -> Reader:
    def read(name: str, raw: str, ctx: Context) -> int | float:
        try:
            number = kind(raw.strip())
        except ValueError:
            number = 0
        if not number > 0:
            raise ConfigError(
                f"{ctx.source}: {name} must be a positive number, not {raw.strip()!r}"
            )
        return number

    return read


def database_url(name: str, raw: str, ctx: Context) -> str:
    """``postgresql://user@host:port/dbname`` (or empty): checked here, so that a typo stops
    start-up with one line instead of every message failing with ``store-error``."""
    raw = raw.strip()
    if not raw:
        return ""
    parts = urlsplit(raw)
    if parts.scheme not in ("postgresql", "postgres"):
        raise ConfigError(
            f"{ctx.source}: {name} must look like postgresql://user@host:port/dbname, "
            f"not a {parts.scheme or 'scheme-less'} URL"
        )
    try:
        parts.port  # noqa: B018 - parsing it is the check
    except ValueError:
        raise ConfigError(f"{ctx.source}: {name} has a bad port") from None
    if not parts.path.strip("/"):
        raise ConfigError(f"{ctx.source}: {name} must name the database (.../dbname)")
    return raw


def file_contents(name: str, raw: str, ctx: Context) -> str:
    """The text of the file ``raw`` names (surrounding whitespace dropped), read once at
    start-up: for a secret whose only key is its file (``database-password-file``)."""
    if not raw.strip():
        return ""
    source = _resolve(raw.strip(), ctx)
    try:
        return source.read_text("utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise ConfigError(f"{ctx.source}: {name}: cannot read {source}: {reason}") from None


def instant(name: str, raw: str, ctx: Context) -> datetime | None:
    raw = raw.strip()
    if not raw or raw.lower() == "now":
        return None
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(
            f"{ctx.source}: {name} must be an ISO 8601 UTC time, not {raw!r}"
        ) from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def nameservers(name: str, raw: str, ctx: Context) -> tuple[tuple[str, int], ...]:
    servers = []
    for item in _items(raw):
        host, port = item, 53
        if item.startswith("["):  # [v6]:port
            host, _, rest = item[1:].partition("]")
            port = int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else 53
        elif item.count(":") == 1:
            host, _, port_text = item.partition(":")
            if not port_text.isdigit() or not 0 < int(port_text) < 65536:
                raise ConfigError(f"{ctx.source}: {name} has a bad port in {item!r}")
            port = int(port_text)
        if not host:
            raise ConfigError(f"{ctx.source}: {name} has an empty host in {item!r}")
        servers.append((_ip_address(name, host, ctx), port))
    return tuple(servers)


def credentials(name: str, raw: str, ctx: Context) -> str:
    """HTTP Basic credentials as ``user:password`` (empty: the door is off)."""
    value = raw.strip()
    user, colon, _password = value.partition(":")
    if value and (not colon or not user):
        raise ConfigError(f"{ctx.source}: {name} must look like user:password")
    return value


def pattern(name: str, raw: str, ctx: Context) -> re.Pattern[str]:
    try:
        return re.compile(raw.strip())
    except re.error as exc:
        raise ConfigError(f"{ctx.source}: {name} is not a regular expression: {exc}") from None


def listen_address(name: str, raw: str, ctx: Context) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` to listen on."""
    text_value = raw.strip()
    if text_value.startswith("["):
        host, _, rest = text_value[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port_text = text_value.rpartition(":")
    if not host or not port_text.isdigit() or not 0 <= int(port_text) < 65536:
        raise ConfigError(f"{ctx.source}: {name} must look like host:port, not {text_value!r}")
    return host, int(port_text)


def lowered_items(_name: str, raw: str, _ctx: Context) -> tuple[str, ...]:
    return tuple(item.lower() for item in _items(raw))


def _items(raw: str) -> list[str]:
    return [item for item in (part.strip() for part in raw.split(",")) if item]


def _resolve(raw: str, ctx: Context) -> Path:
    p = Path(raw).expanduser()
    return p if p.is_absolute() else ctx.base / p


def _ip_address(name: str, host: str, ctx: Context) -> str:
    """The resolver needs addresses: a name such as ``localhost`` is resolved once, here."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    try:
        return socket.getaddrinfo(host, 53, proto=socket.IPPROTO_UDP)[0][4][0]
    except OSError:
        raise ConfigError(f"{ctx.source}: {name} host {host!r} does not resolve") from None


# -- the settings ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """Every configuration key of the service, each declared once with :func:`key`."""

    webhook_token: str = key("x-messagesystems-webhook-token", "", text, secret=True)
    store: str = key("store", "folder", choice("folder", "postgresql"))
    user_certs_dir: Path = key("user-certs-dir", "certs", path)
    database_url: str = key("database-url", "", database_url)
    #: The password itself, read from the file ``database-password-file`` names.
    database_password: str = key("database-password-file", "", file_contents)
    database_pool_size: int = key("database-pool-size", "4", positive(int))
    trusted_certs: tuple[Path, ...] = key("trusted-certs", resources.SHIPPED_BUNDLE_NAME, bundles)
    log_file: Path | None = key("log-file", "webapp.log", log_target)
    log_level: str = key(
        "log-level", "INFO", choice("DEBUG", "INFO", "WARNING", "ERROR", upper=True)
    )
    log_format: str = key("log-format", "text", choice("text", "json"))
    dkim: str = key("dkim", "require", choice("require", "off"))
    dkim_alignment: str = key("dkim-alignment", "relaxed", choice("relaxed", "strict"))
    dns_nameservers: tuple[tuple[str, int], ...] = key("dns-nameservers", "", nameservers)
    dns_timeout: float = key("dns-timeout", "5", positive(float))
    verify_time: datetime | None = key("verify-time", "", instant)
    allow_sha1: bool = key("allow-sha1", "no", boolean)
    max_request_bytes: int = key("max-request-bytes", str(50 * 1024 * 1024), positive(int))
    metrics_token: str = key("metrics-token", "", text, secret=True)
    lookup_token: str = key("lookup-token", "", text, secret=True)
    revocation: str = key("revocation", "soft", choice("soft", "hard", "off"))
    revocation_fetch: bool = key("revocation-fetch", "yes", boolean)
    revocation_crls: tuple[Path, ...] = key("revocation-crls", "", paths)
    revocation_allow_private: bool = key("revocation-allow-private", "no", boolean)
    revocation_timeout: float = key("revocation-timeout", "5", positive(float))
    revocation_max_bytes: int = key("revocation-max-bytes", str(20 * 1024 * 1024), positive(int))
    # -- the other doors (smime_collector/intake/); each HTTP door exists only when configured
    mailgun_signing_key: str = key("mailgun-signing-key", "", text, secret=True)
    postmark_basic_auth: str = key("postmark-basic-auth", "", credentials, secret=True)
    sendgrid_basic_auth: str = key("sendgrid-basic-auth", "", credentials, secret=True)
    ses_topic_arns: tuple[str, ...] = key("ses-topic-arns", "", items)
    ses_signing_cert_url_pattern: re.Pattern[str] = key(
        "ses-signing-cert-url-pattern",
        r"^https://sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?/.+\.pem$",
        pattern,
    )
    ses_ca_bundle: Path | None = key("ses-ca-bundle", "", optional_file)
    raw_token: str = key("raw-token", "", text, secret=True)
    smtp_listen: tuple[str, int] = key("smtp-listen", "127.0.0.1:2525", listen_address)
    smtp_protocol: str = key("smtp-protocol", "smtp", choice("smtp", "lmtp"))
    smtp_max_bytes: int = key("smtp-max-bytes", str(25 * 1024 * 1024), positive(int))
    smtp_recipients: tuple[str, ...] = key("smtp-recipients", "", lowered_items)
    smtp_tls_cert: Path | None = key("smtp-tls-cert", "", optional_file)
    smtp_tls_key: Path | None = key("smtp-tls-key", "", optional_file)
    ui_token: str = key("ui-token", "", text, secret=True)
    ui_session_hours: float = key("ui-session-hours", "8", positive(float))
    verdict_retention_days: int = key("verdict-retention-days", "30", positive(int))
    #: Where the values came from, for messages: the INI file's path or "(defaults)".
    source: str = field(default="(defaults)", compare=False)

    @classmethod
    def from_mapping(
        cls,
        values: Mapping[str, str],
        base_dir: Path | None = None,
        source: str = "(defaults)",
        environ: Mapping[str, str] | None = None,
    ) -> Settings:
        """Settings from INI-style ``values`` over the defaults, under ``environ``'s
        ``SMIME_COLLECTOR_*`` variables (none when ``environ`` is ``None``).

        Raises :class:`ConfigError` for an unknown key, a bad value or an unreadable secret file.
        """
        ctx = Context(base_dir or Path.cwd(), source)
        given = {name.lower().strip(): str(value) for name, value in values.items()}
        from_environment = _from_environment(environ or {})
        for spec in keys():
            # A secret set in the environment, directly or as its -file, wins over both forms
            # in the INI file: "both set" is a mistake only within one source.
            pair = (spec.name, spec.name + FILE_SUFFIX)
            if spec.secret and any(name in from_environment for name in pair):
                for name in pair:
                    given.pop(name, None)
        given.update(from_environment)
        _refuse_unknown(given, ctx)
        kwargs: dict[str, Any] = {"source": source}
        for attr, spec in _fields().items():
            raw = _value(spec, given, ctx)
            kwargs[attr] = spec.read(spec.name, raw, ctx)
        settings = cls(**kwargs)
        _check_together(settings, ctx)
        return settings

    def risks(self) -> list[tuple[str, str]]:
        """Settings that are legal but dangerous in production: (key, why), for
        ``--check-config`` and the start-up log."""
        found = []
        if self.webhook_token == SAMPLE_TOKEN:
            found.append(
                (
                    "x-messagesystems-webhook-token",
                    "is the sample token from the README: set your own "
                    "(x-messagesystems-webhook-token-file or "
                    "SMIME_COLLECTOR_X_MESSAGESYSTEMS_WEBHOOK_TOKEN)",
                )
            )
        if not self.webhook_token:
            found.append(
                ("x-messagesystems-webhook-token", "is empty: anyone can post to the webhook")
            )
        if self.dkim == "off":
            found.append(("dkim", "is off: the From: address is not authenticated (testing only)"))
        if self.verify_time is not None:
            found.append(
                (
                    "verify-time",
                    f"is fixed at {self.verify_time:%Y-%m-%dT%H:%M:%SZ}: certificates are judged "
                    "as of then, expired ones included (replaying old mail only)",
                )
            )
        if self.allow_sha1:
            found.append(("allow-sha1", "is yes: SHA-1 signatures, which can be forged, count"))
        if self.revocation == "off":
            found.append(("revocation", "is off: a revoked certificate would be stored"))
        if self.revocation_allow_private:
            found.append(
                (
                    "revocation-allow-private",
                    "is yes: mail can make the service fetch from private addresses",
                )
            )
        if self.ui_token and len(self.ui_token) < MIN_UI_TOKEN_LENGTH:
            found.append(
                (
                    "ui-token",
                    f"is shorter than {MIN_UI_TOKEN_LENGTH} characters: the operator page's "
                    "sign-in is only as strong as the token (try: openssl rand -base64 24)",
                )
            )
        return found


def _check_together(settings: Settings, ctx: Context) -> None:
    """Rules that involve more than one key."""
    if (settings.smtp_tls_cert is None) != (settings.smtp_tls_key is None):
        present, missing = (
            ("smtp-tls-cert", "smtp-tls-key")
            if settings.smtp_tls_cert
            else ("smtp-tls-key", "smtp-tls-cert")
        )
        raise ConfigError(
            f"{ctx.source}: {present} is set but {missing} is not: STARTTLS needs both"
        )
    if settings.store == "postgresql" and not settings.database_url:
        raise ConfigError(f"{ctx.source}: store = postgresql needs database-url")


def keys() -> list[Key]:
    """Every configuration key, in declaration order."""
    return list(_fields().values())


def _fields() -> dict[str, Key]:
    return {f.name: f.metadata["key"] for f in dataclasses.fields(Settings) if "key" in f.metadata}


def _known_names() -> set[str]:
    names = set()
    for spec in keys():
        names.add(spec.name)
        if spec.secret:
            names.add(spec.name + FILE_SUFFIX)
    return names


def _from_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """``SMIME_COLLECTOR_LOG_LEVEL=DEBUG`` → ``{"log-level": "DEBUG"}``; unknown names kept,
    so that they are refused like a misspelt INI key."""
    found = {}
    for name, value in environ.items():
        if name.startswith(ENV_PREFIX) and len(name) > len(ENV_PREFIX):
            found[name[len(ENV_PREFIX) :].lower().replace("_", "-")] = value
    return found


def _refuse_unknown(given: Mapping[str, str], ctx: Context) -> None:
    unknown = sorted(set(given) - _known_names())
    if unknown:
        env = ENV_PREFIX + unknown[0].upper().replace("-", "_")
        raise ConfigError(
            f"{ctx.source}: unknown configuration key {unknown[0]!r} "
            f"(or environment variable {env}); check its spelling"
        )


def _value(spec: Key, given: Mapping[str, str], ctx: Context) -> str:
    """The key's text: given directly, read from its ``-file``, or the default."""
    file_key = spec.name + FILE_SUFFIX
    if spec.secret and given.get(file_key, "").strip():
        if given.get(spec.name, "").strip():
            raise ConfigError(f"{ctx.source}: set {spec.name} or {file_key}, not both")
        return file_contents(file_key, given[file_key], ctx)
    return given.get(spec.name, spec.default)


#: Key name → default text, for documentation checks and messages.
DEFAULTS: dict[str, str] = {spec.name: spec.default for spec in keys()}


def ini_path(path: str | os.PathLike[str] | None = None) -> Path:
    """The INI file to read: ``path``, else ``$WEBAPP_INI``, else ``./webapp.ini``."""
    return Path(path or os.environ.get("WEBAPP_INI") or DEFAULT_INI)


def load_settings(
    path: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Read the INI file (see :func:`ini_path`), then ``overrides``, then the environment."""
    ini = ini_path(path)
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with ini.open(encoding="utf-8") as handle:
            parser.read_file(handle)
    except FileNotFoundError:
        raise ConfigError(
            f"{ini}: configuration file not found (set WEBAPP_INI or --config)"
        ) from None
    except (OSError, UnicodeDecodeError, configparser.Error) as exc:
        first = str(exc).splitlines()[0]
        raise ConfigError(f"{ini}: cannot read configuration: {first}") from None
    if not parser.has_section(SECTION):
        raise ConfigError(f"{ini}: no [{SECTION}] section")
    values = dict(parser.items(SECTION))
    values.update(overrides or {})
    env = os.environ if environ is None else environ
    return Settings.from_mapping(values, ini.resolve().parent, str(ini), env)
