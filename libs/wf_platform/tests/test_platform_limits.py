"""Document parsing limits and settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from wf_platform.limits import parse_document
from wf_platform.problems import PayloadTooLargeError, UnprocessableError, UnsupportedMediaTypeError
from wf_platform.settings import ServiceSettings, SettingsError


def test_json_and_yaml_are_parsed() -> None:
    assert parse_document(b'{"a": [1, 2]}', content_type="application/json") == ({"a": [1, 2]}, "json")
    assert parse_document(b"a: [1, 2]\nwhen: 2024-01-01\n", content_type=None) == (
        {"a": [1, 2], "when": "2024-01-01"},
        "yaml",
    )


@pytest.mark.parametrize(
    ("body", "content_type", "needle"),
    [
        (b"a: 1\nb: [1\nc: 2\n", "application/yaml", "line 3"),
        (b'{"a": 1,\n\n "b": }', "application/json", "line 3"),
        (b"a: 1\na: 2\n", "application/yaml", "duplicate key"),
        (b"a: &x [1]\nb: *x\n", "application/yaml", "aliases"),
        (b"\xff\xfe", "application/json", "UTF-8"),
    ],
)
def test_parse_errors_say_where(body: bytes, content_type: str, needle: str) -> None:
    with pytest.raises(UnprocessableError) as raised:
        parse_document(body, content_type=content_type)
    assert raised.value.code == "invalid_document"
    assert raised.value.errors is not None
    assert needle in raised.value.errors[0].message


def test_depth_and_size_limits() -> None:
    deep = b"[" * 40 + b"]" * 40
    with pytest.raises(UnprocessableError) as raised:
        parse_document(deep, content_type="application/json", max_depth=32)
    assert raised.value.code == "nesting_too_deep"
    very_deep = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(UnprocessableError):
        parse_document(very_deep, content_type="application/json", max_depth=32)
    with pytest.raises(PayloadTooLargeError):
        parse_document(b"{}" + b" " * 100, content_type="application/json", max_bytes=50)
    with pytest.raises(UnsupportedMediaTypeError):
        parse_document(b"<a/>", content_type="application/xml")


def test_settings_from_env() -> None:
    settings = ServiceSettings.from_env(
        "SVC",
        env={
            "SVC_PORT": "9000",
            "SVC_JWT_ALGORITHMS": "RS256, ES256",
            "SVC_JWT_PUBLIC_KEY_FILE": ".dev/jwt-public.pem",
            "SVC_DB_POOL_SIZE": "4",
            "OTEL_TRACES_EXPORTER": "none",
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318",
        },
        service_name="svc",
        port=8001,
    )
    assert settings.port == 9000
    assert settings.db_pool_size == 4
    assert settings.jwt_algorithms == ("RS256", "ES256")
    assert settings.jwt_public_key_file == Path(".dev/jwt-public.pem")
    assert settings.telemetry.service_name == "svc"
    assert not settings.telemetry.enabled
    assert settings.telemetry.otlp_endpoint == "http://collector:4318/v1/traces"
    with pytest.raises(SettingsError, match="SVC_PORT"):
        ServiceSettings.from_env("SVC", env={"SVC_PORT": "eighty"})
