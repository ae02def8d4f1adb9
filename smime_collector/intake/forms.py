"""HTML form bodies read as bytes: the two encodings Mailgun and SendGrid post in.

Flask's ``request.form`` decodes every field as UTF-8 and replaces what does not decode, which
would change the bytes of an 8-bit message before DKIM and the S/MIME signature see it. Here
each field's value stays exactly the bytes that were sent: multipart parts through werkzeug's
own byte-level decoder, URL-encoded pairs through :func:`urllib.parse.unquote_to_bytes`.
"""

from __future__ import annotations

import urllib.parse

from flask import request
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.sansio.multipart import Data, Epilogue, Field, File, MultipartDecoder, NeedData

from smime_collector.intake.common import read_body

#: Fields (or parts) one form may hold; providers send a few dozen at most.
MAX_FORM_FIELDS = 1000

MULTIPART = "multipart/form-data"
URLENCODED = "application/x-www-form-urlencoded"


class BadForm(Exception):
    """The body is not the form the door expects; the message says what is wrong."""


def read_form(encodings: tuple[str, ...] = (MULTIPART, URLENCODED)) -> dict[str, bytes]:
    """The request's form fields as bytes; the first of repeated names wins."""
    mimetype = request.mimetype
    if mimetype not in encodings:
        raise BadForm(f"Content-Type must be {' or '.join(encodings)}, not {mimetype or 'none'}")
    body = read_body()
    if mimetype == URLENCODED:
        return _urlencoded(body)
    boundary = request.mimetype_params.get("boundary", "")
    if not boundary:
        raise BadForm("Content-Type multipart/form-data needs a boundary parameter")
    return multipart_fields(body, boundary.encode("latin-1"))


def _urlencoded(body: bytes) -> dict[str, bytes]:
    """``name=value&...`` with ``+`` and ``%XX`` undone on bytes (``parse_qsl`` would decode
    the escapes as UTF-8, replacing what does not decode)."""
    if body.count(b"&") >= MAX_FORM_FIELDS:
        raise BadForm(f"the form has more than {MAX_FORM_FIELDS} fields")
    fields: dict[str, bytes] = {}
    for pair in body.split(b"&"):
        if not pair:
            continue
        name, _, value = pair.partition(b"=")
        key = urllib.parse.unquote_to_bytes(name.replace(b"+", b" ")).decode("utf-8", "replace")
        fields.setdefault(key, urllib.parse.unquote_to_bytes(value.replace(b"+", b" ")))
    return fields


def multipart_fields(body: bytes, boundary: bytes) -> dict[str, bytes]:
    """Every part of a ``multipart/form-data`` body, by name, as the exact bytes sent."""
    decoder = MultipartDecoder(boundary, max_parts=MAX_FORM_FIELDS)
    decoder.receive_data(body)
    decoder.receive_data(None)
    fields: dict[str, bytes] = {}
    name: str | None = None
    chunks: list[bytes] = []
    try:
        while True:
            event = decoder.next_event()
            if isinstance(event, (Field, File)):
                name, chunks = event.name, []
            elif isinstance(event, Data):
                chunks.append(event.data)
                if not event.more_data and name is not None:
                    fields.setdefault(name, b"".join(chunks))
            elif isinstance(event, (Epilogue, NeedData)):
                return fields
    except RequestEntityTooLarge:
        raise BadForm(f"the form has more than {MAX_FORM_FIELDS} parts") from None
    except ValueError as exc:
        raise BadForm(f"the body is not valid multipart/form-data: {exc}") from None


def text_field(fields: dict[str, bytes], name: str) -> str | None:
    """A short text field (token, timestamp, JSON), or ``None`` when absent.

    Raises :class:`BadForm` naming the field when it is not UTF-8.
    """
    value = fields.get(name)
    if value is None:
        return None
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise BadForm(f"{name} is not valid UTF-8") from None
