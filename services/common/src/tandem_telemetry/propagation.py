"""W3C Trace Context and Baggage, parsed from raw header bytes and written back.

The OpenTelemetry propagators work on a carrier through a getter, which for an
ASGI header list means one scan of the list per header name. The middleware
scans the list once and hands the three raw values here instead. Malformed or
oversized values never raise: they are ignored as the W3C rules say.
"""

from __future__ import annotations

import re
from urllib.parse import quote, unquote

from opentelemetry import baggage as otel_baggage
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState

# version-traceid-parentid-flags; a future version may append "-..." fields.
_TRACEPARENT = re.compile(rb"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?", re.DOTALL)
_ZERO_TRACE_ID = b"0" * 32
_ZERO_SPAN_ID = b"0" * 16

# https://www.w3.org/TR/trace-context/#tracestate-header
TRACESTATE_MAX_MEMBERS = 32
TRACESTATE_MAX_LENGTH = 512
_TRACESTATE_KEY = re.compile(
    r"[a-z][_0-9a-z\-*/]{0,255}|[a-z0-9][_0-9a-z\-*/]{0,240}@[a-z][_0-9a-z\-*/]{0,13}"
)
_TRACESTATE_VALUE = re.compile(r"[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]")

# https://www.w3.org/TR/baggage/#limits
BAGGAGE_MAX_BYTES = 8192
BAGGAGE_MAX_MEMBERS = 64
_BAGGAGE_KEY = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAGGAGE_VALUE = re.compile(r"[\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]*")
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
# Characters a baggage value may carry unescaped (W3C baggage-octet, minus '%').
_BAGGAGE_SAFE = "!#$&'()*+-./:<=>?@[]^_`{|}~"


def parse_traceparent(value: bytes) -> SpanContext | None:
    """Return the remote span context a traceparent names, or None if it is invalid."""
    match = _TRACEPARENT.fullmatch(value)
    if match is None:
        return None
    version, trace_id, span_id, flags, rest = match.groups()
    # Version ff is forbidden; version 00 has exactly four fields. Later
    # versions may add fields, which a version-00 parser must accept and ignore.
    if version == b"ff" or (version == b"00" and rest is not None):
        return None
    if trace_id == _ZERO_TRACE_ID or span_id == _ZERO_SPAN_ID:
        return None
    return SpanContext(
        trace_id=int(trace_id, 16),
        span_id=int(span_id, 16),
        is_remote=True,
        trace_flags=TraceFlags(int(flags, 16)),
    )


def parse_tracestate(value: bytes) -> TraceState | None:
    """Return the tracestate, or None when it breaks any W3C rule (then it is discarded whole)."""
    if len(value) > TRACESTATE_MAX_LENGTH:
        return None
    try:
        text = value.decode("ascii")
    except UnicodeDecodeError:
        return None
    pairs: dict[str, str] = {}
    for member in text.split(","):
        member = member.strip(" \t")
        if not member:
            continue
        key, sep, val = member.partition("=")
        if not sep or key in pairs or not _TRACESTATE_KEY.fullmatch(key) or not _TRACESTATE_VALUE.fullmatch(val):
            return None
        pairs[key] = val
        if len(pairs) > TRACESTATE_MAX_MEMBERS:
            return None
    return TraceState(list(pairs.items())) if pairs else None


def parse_baggage(value: bytes) -> dict[str, str]:
    """Return the baggage entries; oversized baggage is dropped whole, malformed members one by one."""
    if len(value) > BAGGAGE_MAX_BYTES:
        return {}
    try:
        text = value.decode("ascii")
    except UnicodeDecodeError:
        return {}
    entries: dict[str, str] = {}
    members = text.split(",")
    if len(members) > BAGGAGE_MAX_MEMBERS:
        return {}
    for member in members:
        # Properties after ';' are allowed by the spec; Tandem does not use them.
        key, sep, raw = member.split(";", 1)[0].partition("=")
        key, raw = key.strip(" \t"), raw.strip(" \t")
        if not sep or not _BAGGAGE_KEY.fullmatch(key) or not _BAGGAGE_VALUE.fullmatch(raw) or _BAD_PERCENT.search(raw):
            continue
        try:
            entries[key] = unquote(raw, errors="strict")
        except UnicodeDecodeError:
            continue
    return entries


def remote_context(
    traceparent: bytes | None, tracestate: bytes | None, baggage: bytes | None, *, trust: bool = True
) -> tuple[Context | None, SpanContext | None]:
    """Build the parent context for a server span from the raw incoming headers.

    Returns (parent context, caller's span context). With trust=False the
    parent context carries no span and no baggage: the caller is only worth a
    link, so the returned span context is for that link.
    """
    caller = parse_traceparent(traceparent) if traceparent is not None else None
    if not trust:
        return None, caller
    ctx: Context | None = None
    if caller is not None:
        # A tracestate is only meaningful beside a valid traceparent.
        if tracestate is not None and (state := parse_tracestate(tracestate)) is not None:
            caller = SpanContext(caller.trace_id, caller.span_id, True, caller.trace_flags, state)
        ctx = trace.set_span_in_context(NonRecordingSpan(caller))
    if baggage is not None:
        for key, val in parse_baggage(baggage).items():
            ctx = otel_baggage.set_baggage(key, val, ctx)
    return ctx, caller


_FLAGS_HEX = tuple(f"{flags:02x}" for flags in range(256))


def format_traceparent(span_context: SpanContext) -> str:
    """Render a span context as a version-00 traceparent (also the traceresponse format)."""
    # bytes.hex() is twice as fast as format(int, "032x"); this runs for every request and call.
    trace_id, span_id = span_context.trace_id.to_bytes(16, "big"), span_context.span_id.to_bytes(8, "big")
    return f"00-{trace_id.hex()}-{span_id.hex()}-{_FLAGS_HEX[span_context.trace_flags]}"


def format_baggage(entries: dict[str, object]) -> str | None:
    """Render baggage entries as a header value, or None when there are none that fit the limits."""
    members = [f"{key}={quote(str(val), safe=_BAGGAGE_SAFE)}" for key, val in list(entries.items())[:BAGGAGE_MAX_MEMBERS]]
    value = ",".join(members)
    if not value or len(value) > BAGGAGE_MAX_BYTES:
        return None
    return value
