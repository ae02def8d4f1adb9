"""The doors' configuration keys: their defaults and their checks. (The memory of answers is the
store's: ``tests/test_certstore.py`` tests it on both backends.)"""

from __future__ import annotations

import pytest

from smime_collector.config import ConfigError, Settings


def test_defaults(tmp_path) -> None:
    settings = Settings.from_mapping({}, tmp_path, "test")
    assert settings.smtp_listen == ("127.0.0.1", 2525)
    assert settings.smtp_protocol == "smtp"
    assert settings.smtp_max_bytes == 25 * 1024 * 1024
    assert settings.smtp_recipients == ()
    assert settings.ses_topic_arns == ()
    assert settings.ses_signing_cert_url_pattern.pattern == (
        r"^https://sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?/.+\.pem$"
    )
    assert not any(
        (settings.mailgun_signing_key, settings.postmark_basic_auth, settings.sendgrid_basic_auth,
         settings.raw_token, settings.ses_ca_bundle, settings.smtp_tls_cert)
    )  # fmt: skip


def test_values_are_read(tmp_path) -> None:
    (tmp_path / "ca.pem").write_text("x")
    settings = Settings.from_mapping(
        {
            "smtp-listen": "[::1]:2526",
            "smtp-protocol": "LMTP",
            "smtp-recipients": "Inbound.Example.NET, Keys@Example.org",
            "ses-topic-arns": "arn:a, arn:b",
            "ses-ca-bundle": "ca.pem",
        },
        tmp_path,
        "test",
    )
    assert settings.smtp_listen == ("::1", 2526)
    assert settings.smtp_protocol == "lmtp"
    assert settings.smtp_recipients == ("inbound.example.net", "keys@example.org")
    assert settings.ses_topic_arns == ("arn:a", "arn:b")
    assert settings.ses_ca_bundle == tmp_path / "ca.pem"


@pytest.mark.parametrize(
    ("values", "needle"),
    [
        ({"postmark-basic-auth": "no-colon"}, "postmark-basic-auth must look like user:password"),
        ({"sendgrid-basic-auth": ":password"}, "sendgrid-basic-auth must look like"),
        ({"ses-signing-cert-url-pattern": "(unclosed"}, "ses-signing-cert-url-pattern is not"),
        ({"ses-ca-bundle": "absent.pem"}, "ses-ca-bundle"),
        ({"smtp-listen": "2525"}, "smtp-listen must look like host:port"),
        ({"smtp-listen": "127.0.0.1:99999"}, "smtp-listen"),
        ({"smtp-protocol": "esmtp"}, "smtp-protocol must be one of smtp, lmtp"),
        ({"smtp-max-bytes": "-1"}, "smtp-max-bytes must be a positive number"),
        ({"smtp-tls-cert": "cert.pem"}, "smtp-tls-cert is set but smtp-tls-key is not"),
        ({"smtp-tls-key": "cert.pem"}, "smtp-tls-key is set but smtp-tls-cert is not"),
    ],
)
def test_bad_values_name_the_key(tmp_path, values, needle) -> None:
    (tmp_path / "cert.pem").write_text("x")
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(")):
        Settings.from_mapping(values, tmp_path, "test")


@pytest.mark.parametrize(
    "name", ["mailgun-signing-key", "postmark-basic-auth", "sendgrid-basic-auth", "raw-token"]
)
def test_door_secrets_come_from_files(tmp_path, name) -> None:
    (tmp_path / "secret").write_text("user:from-a-file\n")
    settings = Settings.from_mapping({f"{name}-file": "secret"}, tmp_path, "test")
    assert getattr(settings, name.replace("-", "_")) == "user:from-a-file"
