"""One settings object, read from the INI file's ``[webapp]`` section and validated at start-up.

Every problem is a :class:`ConfigError` whose text is one line naming the key, so a bad config
stops the service before it answers anything, instead of surfacing later as a 500.
Relative paths are resolved against the folder of the INI file that names them.
"""

from __future__ import annotations

import configparser
import ipaddress
import os
import socket
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

REPO_DIR = Path(__file__).resolve().parent.parent
SECTION = "webapp"
DEFAULT_INI = "webapp.ini"

DEFAULTS: dict[str, str] = {
    "x-messagesystems-webhook-token": "",
    "user-certs-dir": "certs",
    "trusted-certs": str(REPO_DIR / "smime-ca-bundle.pem"),
    "log-file": "webapp.log",
    "log-level": "INFO",
    "dkim": "require",
    "dkim-alignment": "relaxed",
    "dns-nameservers": "",
    "dns-timeout": "5",
    "verify-time": "",
    "allow-sha1": "no",
    "max-request-bytes": str(50 * 1024 * 1024),
    "metrics-token": "",
    "lookup-token": "",
}


class ConfigError(Exception):
    """A one-line, key-naming description of what is wrong with the configuration."""


@dataclass(frozen=True)
class Settings:
    webhook_token: str
    user_certs_dir: Path
    trusted_certs: tuple[Path, ...]
    log_file: Path
    log_level: str
    dkim: str
    dkim_alignment: str
    dns_nameservers: tuple[tuple[str, int], ...]
    dns_timeout: float
    verify_time: datetime | None
    allow_sha1: bool
    max_request_bytes: int
    metrics_token: str
    lookup_token: str
    source: str = "(defaults)"
    unknown_keys: tuple[str, ...] = field(default=())

    @classmethod
    def from_mapping(
        cls,
        values: dict[str, str],
        base_dir: Path | None = None,
        source: str = "(defaults)",
    ) -> Settings:
        """Build settings from INI-style keys; missing keys take their defaults."""
        base = base_dir or Path.cwd()
        merged = {**DEFAULTS, **{k.lower(): str(v) for k, v in values.items()}}
        unknown = tuple(sorted(set(merged) - set(DEFAULTS)))

        def path(key: str) -> Path:
            raw = merged[key].strip()
            if not raw:
                raise ConfigError(f"{source}: {key} must not be empty")
            p = Path(raw).expanduser()
            return p if p.is_absolute() else base / p

        trusted = tuple(
            (Path(p).expanduser() if Path(p).expanduser().is_absolute() else base / p)
            for p in (s.strip() for s in merged["trusted-certs"].split(","))
            if p
        )
        if not trusted:
            raise ConfigError(f"{source}: trusted-certs must name at least one PEM bundle")
        return cls(
            webhook_token=merged["x-messagesystems-webhook-token"].strip(),
            user_certs_dir=path("user-certs-dir"),
            trusted_certs=trusted,
            log_file=path("log-file"),
            log_level=_choice(
                merged,
                "log-level",
                ("DEBUG", "INFO", "WARNING", "ERROR"),
                source,
                upper=True,
            ),
            dkim=_choice(merged, "dkim", ("require", "off"), source),
            dkim_alignment=_choice(merged, "dkim-alignment", ("relaxed", "strict"), source),
            dns_nameservers=_nameservers(merged["dns-nameservers"], source),
            dns_timeout=_positive(merged, "dns-timeout", source, float),
            verify_time=_instant(merged["verify-time"], source),
            allow_sha1=_boolean(merged, "allow-sha1", source),
            max_request_bytes=int(_positive(merged, "max-request-bytes", source, int)),
            metrics_token=merged["metrics-token"].strip(),
            lookup_token=merged["lookup-token"].strip(),
            source=source,
            unknown_keys=unknown,
        )


def load_settings(
    path: str | os.PathLike[str] | None = None, overrides: dict[str, str] | None = None
) -> Settings:
    """Read ``path`` (default: env ``WEBAPP_INI``, else ``./webapp.ini``) plus overrides."""
    ini = Path(path or os.environ.get("WEBAPP_INI") or DEFAULT_INI)
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
    return Settings.from_mapping(values, ini.resolve().parent, str(ini))


def _choice(
    values: dict[str, str],
    key: str,
    allowed: tuple[str, ...],
    source: str,
    upper: bool = False,
) -> str:
    raw = values[key].strip()
    value = raw.upper() if upper else raw.lower()
    if value not in allowed:
        raise ConfigError(f"{source}: {key} must be one of {', '.join(allowed)}, not {raw!r}")
    return value


def _boolean(values: dict[str, str], key: str, source: str) -> bool:
    raw = values[key].strip().lower()
    if raw in ("yes", "true", "on", "1"):
        return True
    if raw in ("no", "false", "off", "0", ""):
        return False
    raise ConfigError(f"{source}: {key} must be yes or no, not {values[key]!r}")


def _positive(values: dict[str, str], key: str, source: str, kind: type) -> float:
    try:
        number = kind(values[key].strip())
    except ValueError:
        raise ConfigError(
            f"{source}: {key} must be a positive number, not {values[key]!r}"
        ) from None
    if number <= 0:
        raise ConfigError(f"{source}: {key} must be a positive number, not {values[key]!r}")
    return number


def _nameservers(raw: str, source: str) -> tuple[tuple[str, int], ...]:
    servers = []
    for item in (s.strip() for s in raw.split(",")):
        if not item:
            continue
        host, port = item, 53
        if item.startswith("["):  # [v6]:port
            host, _, rest = item[1:].partition("]")
            port = int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else 53
        elif item.count(":") == 1:
            host, _, port_text = item.partition(":")
            if not port_text.isdigit() or not 0 < int(port_text) < 65536:
                raise ConfigError(f"{source}: dns-nameservers has a bad port in {item!r}")
            port = int(port_text)
        if not host:
            raise ConfigError(f"{source}: dns-nameservers has an empty host in {item!r}")
        servers.append((_ip_address(host, source), port))
    return tuple(servers)


def _ip_address(host: str, source: str) -> str:
    """The resolver needs addresses: a name such as ``localhost`` is resolved once, here."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    try:
        return socket.getaddrinfo(host, 53, proto=socket.IPPROTO_UDP)[0][4][0]
    except OSError:
        raise ConfigError(f"{source}: dns-nameservers host {host!r} does not resolve") from None


def _instant(raw: str, source: str) -> datetime | None:
    raw = raw.strip()
    if not raw or raw.lower() == "now":
        return None
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(
            f"{source}: verify-time must be an ISO 8601 UTC time, not {raw!r}"
        ) from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
