"""OTLP/HTTP body handling: content types, compression, protobuf and OTLP/JSON.

OTLP/JSON differs from protobuf's canonical JSON in one way that matters here: trace and
span ids are hex strings, not base64, so they are converted before ``json_format`` runs.
"""

from __future__ import annotations

import base64
import json
import zlib
from typing import Any, TypeVar

from google.protobuf import json_format
from google.protobuf.message import Message

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
SUPPORTED_MEDIA_TYPES = (JSON, PROTOBUF)

# google.rpc.Code values used in error bodies.
INVALID_ARGUMENT = 3
RESOURCE_EXHAUSTED = 8

_ID_KEYS = frozenset({"traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"})

M = TypeVar("M", bound=Message)


class BadRequestError(Exception):
    """A request the client must fix; carries the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def media_type(content_type: str | None) -> str:
    """Lower-cased media type without parameters (``; charset=utf-8``)."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def decompress(body: bytes, encoding: str | None, limit: int) -> bytes:
    """Undo ``Content-Encoding``; refuse more than ``limit`` bytes of output."""
    coding = (encoding or "identity").strip().lower()
    if coding in ("", "identity"):
        return body
    if coding == "gzip":
        wbits = 16 + zlib.MAX_WBITS
    elif coding == "deflate":
        wbits = zlib.MAX_WBITS  # zlib-wrapped, as HTTP's "deflate" means
    else:
        raise BadRequestError(
            f"unsupported Content-Encoding {encoding!r}: use gzip, deflate or identity"
        )
    inflater = zlib.decompressobj(wbits)
    try:
        # max_length bounds memory even for a decompression bomb.
        data = inflater.decompress(body, limit + 1)
        if not inflater.eof:
            if len(data) > limit:
                raise BadRequestError(f"decompressed body exceeds {limit} bytes", 413)
            raise BadRequestError(f"truncated {coding} body")
    except zlib.error as exc:
        raise BadRequestError(f"invalid {coding} body: {exc}") from exc
    return data


def hex_ids_to_base64(node: Any) -> None:
    """Rewrite OTLP/JSON hex ids in place into the base64 that ``json_format`` expects."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _ID_KEYS and isinstance(value, str):
                node[key] = _hex_to_base64(key, value)
            elif isinstance(value, (dict, list)):
                hex_ids_to_base64(value)
    elif isinstance(node, list):
        for item in node:
            if isinstance(item, (dict, list)):
                hex_ids_to_base64(item)


def _hex_to_base64(key: str, value: str) -> str:
    if not value:
        return value
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise BadRequestError(f"invalid {key} {value!r}: OTLP/JSON ids are hex strings") from None
    return base64.b64encode(raw).decode("ascii")


def parse_request(body: bytes, media: str, message_type: type[M]) -> M:
    """Decode an export request body; any malformation becomes :class:`BadRequestError`."""
    message = message_type()
    if media == PROTOBUF:
        try:
            message.ParseFromString(body)
        except Exception as exc:  # DecodeError, or anything upb raises on garbage
            raise BadRequestError(f"invalid protobuf body: {exc}") from exc
        return message
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as exc:  # includes UnicodeDecodeError
        raise BadRequestError(f"invalid JSON body: {exc}") from exc
    if not isinstance(document, dict):
        raise BadRequestError("invalid JSON body: expected an object")
    try:
        hex_ids_to_base64(document)
        # The OTLP spec says receivers must ignore unknown fields.
        json_format.ParseDict(document, message, ignore_unknown_fields=True)
    except BadRequestError:
        raise
    except Exception as exc:  # ParseError, RecursionError, TypeError on odd shapes
        raise BadRequestError(f"invalid OTLP/JSON body: {exc}") from exc
    return message


def encode_message(message: Message, media: str) -> bytes:
    """Encode a response in the request's encoding."""
    if media == PROTOBUF:
        return message.SerializeToString()
    return json.dumps(json_format.MessageToDict(message), separators=(",", ":")).encode()


def encode_status(code: int, message: str, media: str) -> bytes:
    """A ``google.rpc.Status`` body, as OTLP/HTTP error responses carry.

    Hand-encoded (two scalar fields) to avoid depending on googleapis-common-protos.
    """
    if media == PROTOBUF:
        text = message.encode("utf-8")
        return b"\x08" + varint(code) + b"\x12" + varint(len(text)) + text
    return json.dumps({"code": code, "message": message}).encode()


def varint(value: int) -> bytes:
    """Protobuf base-128 varint of a non-negative integer."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)
