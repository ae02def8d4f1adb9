"""JSON request bodies (Postmark, SNS) read strictly, with errors that say where they are."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any


class BadJSON(Exception):
    """The body is not the JSON object the door expects; the message says what is wrong."""


def json_object(body: bytes, what: str, name: str = "request body") -> dict[str, Any]:
    """``body`` as a JSON object; :class:`BadJSON` otherwise.

    JSON is text: a body that is not UTF-8 is refused with the offending byte's position,
    never decoded with replacements (that would silently change a message carried inside).
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadJSON(
            f"{name} is not valid UTF-8 (byte {exc.start}): JSON cannot carry 8-bit "
            "bytes that are not UTF-8"
        ) from None
    value = json_value(text, name)
    if not isinstance(value, dict):
        raise BadJSON(f"{name} must be a JSON object ({what})")
    return value


def json_value(text: str, name: str) -> Any:
    """``text`` parsed as JSON; :class:`BadJSON` saying why it is not, never a traceback."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadJSON(f"{name} is not valid JSON: {exc.msg} at line {exc.lineno}") from None
    except RecursionError:  # json raises it for deeply nested arrays or objects
        raise BadJSON(f"{name} is not valid JSON: nested too deeply") from None
    except ValueError as exc:  # int(): more digits than sys.get_int_max_str_digits() allows
        raise BadJSON(f"{name} is not valid JSON: {str(exc).split(';')[0]}") from None


def string_field(obj: dict[str, Any], name: str, where: str = "") -> str:
    """``obj[name]`` when it is a string; :class:`BadJSON` naming the field otherwise."""
    label = f"{where}.{name}" if where else name
    if name not in obj:
        raise BadJSON(f"{label} is missing")
    value = obj[name]
    if not isinstance(value, str):
        raise BadJSON(f"{label} must be a string")
    return value


def utf8_bytes(text: str, name: str) -> bytes:
    """A JSON string's message as the UTF-8 bytes it stands for."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:  # a \ud800-style escape no bytes can stand for
        raise BadJSON(f"{name} holds a lone surrogate at character {exc.start}") from None


def base64_bytes(text: str, name: str) -> bytes:
    """A JSON string's base64 as the bytes it stands for; line breaks and spaces are ignored."""
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise BadJSON(f"{name} is not valid base64") from None


def text(value: Any) -> str | None:
    """``value`` when it is a string, else ``None``: for provider fields that are only logged."""
    return value if isinstance(value, str) else None


def texts(value: Any) -> tuple[str, ...]:
    """The strings of ``value`` when it is a list (others left out), else none: for logs only."""
    return tuple(v for v in value if isinstance(v, str)) if isinstance(value, list) else ()
