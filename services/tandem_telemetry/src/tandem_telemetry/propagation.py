"""Context propagation: the propagators OTEL_PROPAGATORS names; "tracecontext" is W3C Level 2.

The middleware extracts and the client injects through `opentelemetry.propagate`,
so whatever OTEL_PROPAGATORS lists takes part (default `tracecontext,baggage`;
`none` for none; e.g. `tracecontext,baggage,b3multi` to join a mesh that
speaks B3). Each name is loaded from the installed propagator packages, as
the SDK does, except the two W3C formats, which are this module's, on the
API's public propagator interface:

- "tracecontext" is `W3CTraceContextPropagator`. The API's `TraceState`
  still follows the Level 1 key grammar: it rejects keys that are valid
  today (`foo@`, `foo@@bar`, `1abc`), and its parser drops the caller's
  whole tracestate for one such key or one duplicate. Level 2 allows
  neither loss.
- "baggage" is `W3CBaggagePropagator`. The API's keeps a member's
  properties as part of its value (`a=1;p=x` reads as "1;p=x"), keeps
  malformed percent-escapes and non-UTF-8 bytes as text, and logs a whole
  oversized header; W3C Baggage drops such members.

Members that the API's `TraceState` cannot hold travel beside the span
context, in this module's own context entry, and `inject` writes them back
for the same trace. The span context itself carries the members the API
accepts, so samplers and exporters still see those.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from importlib.metadata import entry_points
from urllib.parse import quote, unquote

from opentelemetry import baggage as otel_baggage
from opentelemetry import trace
from opentelemetry.context import Context, create_key, get_value, set_value
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import (
    CarrierT,
    Getter,
    Setter,
    TextMapPropagator,
    default_getter,
    default_setter,
)
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState

from tandem_telemetry.env import InvalidEnvVar, env_str

DEFAULT_PROPAGATORS = "tracecontext,baggage"

# https://www.w3.org/TR/trace-context-2/#traceparent-header-field-values
# version-traceid-parentid-flags; a later version may append "-..." fields.
_TRACEPARENT = re.compile(
    r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?", re.DOTALL
)
_ZERO_TRACE_ID = "0" * 32
_ZERO_SPAN_ID = "0" * 16

# https://www.w3.org/TR/trace-context-2/#tracestate-header-field-values
#   key = ( lcalpha / DIGIT ) 0*255 ( keychar )
#   keychar = lcalpha / DIGIT / "_" / "-" / "*" / "/" / "@"
TRACESTATE_MAX_MEMBERS = 32
_TRACESTATE_KEY = re.compile(r"[a-z0-9][_0-9a-z\-*/@]{0,255}")
_TRACESTATE_VALUE = re.compile(r"[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]")
# The Level 1 key grammar, which the API's TraceState still enforces (with a
# warning per rejected key): only members it accepts go into a TraceState.
_LEVEL1_KEY = re.compile(
    r"[a-z][_0-9a-z\-*/]{0,255}|[a-z0-9][_0-9a-z\-*/]{0,240}@[a-z][_0-9a-z\-*/]{0,13}"
)

# https://www.w3.org/TR/baggage/#limits
BAGGAGE_MAX_BYTES = 8192
BAGGAGE_MAX_MEMBERS = 64
_BAGGAGE_KEY = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAGGAGE_VALUE = re.compile(r"[\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]*")
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
# Characters a baggage value may carry unescaped (W3C baggage-octet, minus '%').
_BAGGAGE_SAFE = "!#$&'()*+-./:<=>?@[]^_`{|}~"

Member = tuple[str, str]
# (trace id, every member received, the members the API's TraceState holds)
_RECEIVED_TRACESTATE = create_key("tandem-w3c-tracestate")


def parse_traceparent(value: str) -> SpanContext | None:
    """The remote span context a traceparent names, or None if it is invalid."""
    match = _TRACEPARENT.fullmatch(value)
    if match is None:
        return None
    version, trace_id, span_id, flags, rest = match.groups()
    # Version ff is forbidden; version 00 has exactly four fields. Later
    # versions may add fields, which a version-00 parser accepts and ignores.
    if version == "ff" or (version == "00" and rest is not None):
        return None
    if trace_id == _ZERO_TRACE_ID or span_id == _ZERO_SPAN_ID:
        return None
    return SpanContext(
        int(trace_id, 16), int(span_id, 16), is_remote=True, trace_flags=TraceFlags(int(flags, 16))
    )


def parse_tracestate(values: Iterable[str]) -> list[Member]:
    """The members of one or more tracestate header values, in order; none if the list is invalid.

    One invalid member, or more than 32, discards the whole list: the
    specification allows that or dropping the member alone, and the W3C test
    suite (STRICT_LEVEL 2) and OpenTelemetry's SDKs discard it. Empty members
    are allowed and skipped; of a duplicated key the first (the most recent)
    is kept.
    """
    members: dict[str, str] = {}
    count = 0
    for value in values:
        for raw in value.split(","):
            member = raw.strip(" \t")
            if not member:
                continue
            count += 1
            key, sep, val = member.partition("=")
            if (
                not sep
                or count > TRACESTATE_MAX_MEMBERS
                or not _TRACESTATE_KEY.fullmatch(key)
                or not _TRACESTATE_VALUE.fullmatch(val)
            ):
                return []
            members.setdefault(key, val)
    return list(members.items())


def parse_baggage(value: str) -> dict[str, str]:
    """The baggage entries; oversized baggage is dropped whole, malformed members one by one."""
    if len(value) > BAGGAGE_MAX_BYTES or not value.isascii():
        return {}
    members = value.split(",")
    if len(members) > BAGGAGE_MAX_MEMBERS:
        return {}
    entries: dict[str, str] = {}
    for member in members:
        # Properties after ';' describe the entry; they are not part of its value.
        key, sep, raw = member.split(";", 1)[0].partition("=")
        key, raw = key.strip(" \t"), raw.strip(" \t")
        if (
            not sep
            or not _BAGGAGE_KEY.fullmatch(key)
            or not _BAGGAGE_VALUE.fullmatch(raw)
            or _BAD_PERCENT.search(raw)
        ):
            continue
        try:
            entries[key] = unquote(raw, errors="strict")
        except UnicodeDecodeError:
            continue
    return entries


def format_baggage(entries: dict[str, object]) -> str | None:
    """Baggage entries as a header value, or None when none fit the limits."""
    members = [
        f"{key}={quote(str(val), safe=_BAGGAGE_SAFE)}"
        for key, val in list(entries.items())[:BAGGAGE_MAX_MEMBERS]
    ]
    value = ",".join(members)
    if not value or len(value) > BAGGAGE_MAX_BYTES:
        return None
    return value


def format_traceparent(span_context: SpanContext) -> str:
    """A span context as a version-00 traceparent (also the traceresponse format)."""
    trace_id, span_id = (
        span_context.trace_id.to_bytes(16, "big"),
        span_context.span_id.to_bytes(8, "big"),
    )
    return f"00-{trace_id.hex()}-{span_id.hex()}-{span_context.trace_flags:02x}"


class W3CTraceContextPropagator(TextMapPropagator):
    """traceparent and tracestate, per W3C Trace Context Level 2."""

    _TRACEPARENT = "traceparent"
    _TRACESTATE = "tracestate"

    def extract(
        self,
        carrier: CarrierT,
        context: Context | None = None,
        getter: Getter[CarrierT] = default_getter,
    ) -> Context:
        context = Context() if context is None else context
        values = getter.get(carrier, self._TRACEPARENT)
        # Repeated headers combine with commas, as HTTP says: a repeated traceparent is invalid.
        caller = parse_traceparent(",".join(values)) if values else None
        if caller is None:
            return context
        members = parse_tracestate(getter.get(carrier, self._TRACESTATE) or ())
        held = [(key, value) for key, value in members if _LEVEL1_KEY.fullmatch(key)]
        caller = SpanContext(
            caller.trace_id, caller.span_id, True, caller.trace_flags, TraceState(held)
        )
        context = trace.set_span_in_context(NonRecordingSpan(caller), context)
        if len(held) != len(members):
            context = set_value(_RECEIVED_TRACESTATE, (caller.trace_id, members, held), context)
        return context

    def inject(
        self,
        carrier: CarrierT,
        context: Context | None = None,
        setter: Setter[CarrierT] = default_setter,
    ) -> None:
        span_context = trace.get_current_span(context).get_span_context()
        if not span_context.is_valid:
            return
        setter.set(carrier, self._TRACEPARENT, format_traceparent(span_context))
        members = _tracestate_members(span_context, context)
        if members:
            setter.set(
                carrier, self._TRACESTATE, ",".join(f"{key}={value}" for key, value in members)
            )

    @property
    def fields(self) -> set[str]:
        return {self._TRACEPARENT, self._TRACESTATE}


class W3CBaggagePropagator(TextMapPropagator):
    """The baggage header, per W3C Baggage: invalid members dropped, properties not values."""

    _BAGGAGE = "baggage"

    def extract(
        self,
        carrier: CarrierT,
        context: Context | None = None,
        getter: Getter[CarrierT] = default_getter,
    ) -> Context:
        context = Context() if context is None else context
        values = getter.get(carrier, self._BAGGAGE)
        # Repeated headers combine with commas (W3C Baggage, as HTTP says).
        for key, value in (parse_baggage(",".join(values)) if values else {}).items():
            context = otel_baggage.set_baggage(key, value, context)
        return context

    def inject(
        self,
        carrier: CarrierT,
        context: Context | None = None,
        setter: Setter[CarrierT] = default_setter,
    ) -> None:
        entries = otel_baggage.get_all(context)
        if entries and (value := format_baggage(dict(entries))) is not None:
            setter.set(carrier, self._BAGGAGE, value)

    @property
    def fields(self) -> set[str]:
        return {self._BAGGAGE}


def _tracestate_members(span_context: SpanContext, context: Context | None) -> list[Member]:
    """What to send as tracestate: the span's TraceState, with members only Tandem could carry."""
    state = list(span_context.trace_state.items())
    received = get_value(_RECEIVED_TRACESTATE, context)
    if not isinstance(received, tuple) or received[0] != span_context.trace_id:
        return state
    _, members, held = received
    if state == held:
        return list(members)  # unchanged since it arrived: as received, in its order
    # A sampler or the application changed it: its members lead, as Level 2 wants for new ones.
    keys = {key for key, _ in state}
    return (state + [member for member in members if member[0] not in keys])[
        :TRACESTATE_MAX_MEMBERS
    ]


_W3C: dict[str, type[TextMapPropagator]] = {
    "tracecontext": W3CTraceContextPropagator,
    "baggage": W3CBaggagePropagator,
}


def configured_propagator() -> CompositePropagator:
    """The propagators OTEL_PROPAGATORS names, in its order; InvalidEnvVar names an unknown one."""
    raw = env_str("OTEL_PROPAGATORS", DEFAULT_PROPAGATORS)
    propagators: list[TextMapPropagator] = []
    for name in (part.strip() for part in raw.split(",")):
        if not name or name.lower() == "none":
            continue
        if name in _W3C:
            propagators.append(_W3C[name]())
            continue
        found = list(entry_points(group="opentelemetry_propagator", name=name))
        if not found:
            installed = sorted(
                {ep.name for ep in entry_points(group="opentelemetry_propagator")} | {*_W3C, "none"}
            )
            raise InvalidEnvVar(
                f"OTEL_PROPAGATORS={raw!r}: no propagator named {name!r} is installed; "
                f"installed: {', '.join(installed)}"
            )
        propagators.append(found[0].load()())
    return CompositePropagator(propagators)


class ASGIHeaders:
    """An ASGI request's headers, gathered in one pass, as a carrier for `propagate.extract`.

    Names arrive lowercased as bytes; values are decoded only when a
    propagator asks for them.
    """

    __slots__ = ("raw",)

    def __init__(self, headers: Iterable[tuple[bytes, bytes]]) -> None:
        raw: dict[bytes, list[bytes]] = {}
        for name, value in headers:
            values = raw.get(name)
            if values is None:
                raw[name] = [value]
            else:
                values.append(value)
        self.raw = raw

    def first(self, name: bytes) -> bytes | None:
        """A header's value, repeated ones combined with commas as HTTP says."""
        values = self.raw.get(name)
        if values is None:
            return None
        return values[0] if len(values) == 1 else b",".join(values)


class _ASGIHeadersGetter(Getter[ASGIHeaders]):
    def get(self, carrier: ASGIHeaders, key: str) -> list[str] | None:
        values = carrier.raw.get(key.lower().encode("latin-1"))
        return [value.decode("latin-1") for value in values] if values is not None else None

    def keys(self, carrier: ASGIHeaders) -> list[str]:
        return [name.decode("latin-1") for name in carrier.raw]


asgi_getter = _ASGIHeadersGetter()
