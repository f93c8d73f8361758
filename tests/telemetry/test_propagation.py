"""Propagation: the configured propagators, W3C Trace Context Level 2, and malformed headers
through the middleware (property-based)."""

from __future__ import annotations

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from tandem_telemetry import TracingMiddleware
from tandem_telemetry.propagation import (
    W3CBaggagePropagator,
    W3CTraceContextPropagator,
    configured_propagator,
    format_baggage,
    format_traceparent,
    parse_baggage,
    parse_traceparent,
    parse_tracestate,
)
from tests.support import Pipeline

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"


@pytest.mark.parametrize(
    "value",
    [
        f"ff-{TRACE}-{SPAN}-01",  # forbidden version
        f"00-{'0' * 32}-{SPAN}-01",  # all-zero trace id
        f"00-{TRACE}-{'0' * 16}-01",  # all-zero parent id
        f"00-{TRACE[:-1]}-{SPAN}-01",  # short trace id
        f"00-{TRACE}-{SPAN}0-01",  # long parent id
        f"00-{TRACE.upper()}-{SPAN}-01",  # uppercase
        f"00-{TRACE}-{SPAN}-0g",  # non-hex
        f"00-{TRACE}-{SPAN}-01-extra",  # extra field on version 00
        f"0-{TRACE}-{SPAN}-01",
        "",
        f"00_{TRACE}_{SPAN}_01",
    ],
)
def test_invalid_traceparent_is_rejected(value: str) -> None:
    assert parse_traceparent(value) is None


def test_future_version_with_extra_fields_is_accepted() -> None:
    context = parse_traceparent(f"cc-{TRACE}-{SPAN}-01-what-the-future-holds")
    assert context is not None
    assert f"{context.trace_id:032x}" == TRACE
    assert context.is_remote and context.trace_flags.sampled


KEY_256 = "a" * 100 + "@" + "b" * 155


@pytest.mark.parametrize(
    ("header", "members"),
    [
        ("a=1, b=2", [("a", "1"), ("b", "2")]),
        ("tenant@vendor=x", [("tenant@vendor", "x")]),
        # Level 2 keys: "@" anywhere but first, a leading digit, 256 characters.
        (
            "foo@=1,foo@@bar=2,a@b@c=3,1abc=4,9@z=5",
            [("foo@", "1"), ("foo@@bar", "2"), ("a@b@c", "3"), ("1abc", "4"), ("9@z", "5")],
        ),
        (f"{KEY_256}=v", [(KEY_256, "v")]),
        # A duplicate keeps the first (the most recent); the list is kept.
        ("a=1,b=2,a=3", [("a", "1"), ("b", "2")]),
        # Empty members are allowed.
        (" , a=1 ,,b=2, ", [("a", "1"), ("b", "2")]),
        # Exactly 32 members: all kept.
        (",".join(f"k{i}=v" for i in range(32)), [(f"k{i}", "v") for i in range(32)]),
        # One invalid member discards the whole list, as the W3C suite (STRICT_LEVEL 2) expects:
        # a 257-character key, a leading "@", upper case, "=" or "," in a value, an empty value,
        # no "=" at all; and so do 33 members.
        (f"a=1,{KEY_256}x=v", []),
        ("@foo=1,bar=2", []),
        ("a=1,B=3", []),
        ("foo=bar=baz", []),
        ("foo=,bar=3", []),
        ("foo=1,bar", []),
        (",".join(f"k{i}=v" for i in range(33)), []),
        ("A=1", []),
    ],
)
def test_tracestate_follows_level_2(header: str, members: list[tuple[str, str]]) -> None:
    assert parse_tracestate([header]) == members


def test_tracestate_headers_combine_in_order() -> None:
    assert parse_tracestate(["a=1,b=2", "c=3,a=4"]) == [("a", "1"), ("b", "2"), ("c", "3")]
    # The member count and validity are of the combined list.
    eleven = ",".join(f"k{i}=v" for i in range(11))
    assert parse_tracestate([eleven, eleven.replace("k", "m"), eleven.replace("k", "n")]) == []
    assert parse_tracestate(["a=1", "B=2"]) == []


def test_tracestate_round_trips_whole_through_the_propagator(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Extract then inject on the same trace sends what arrived, Level 2 keys included; the API
    logs nothing."""
    from opentelemetry import trace

    header = f"vendor=1,foo@@bar=2,1abc=3,{KEY_256}=4,t@v=5"
    propagator = W3CTraceContextPropagator()
    with caplog.at_level("WARNING"):
        context = propagator.extract({"traceparent": f"00-{TRACE}-{SPAN}-01", "tracestate": header})
        span_context = trace.get_current_span(context).get_span_context()
        # The API's TraceState holds what its grammar allows; the rest travels beside it.
        assert list(span_context.trace_state.items()) == [("vendor", "1"), ("t@v", "5")]
        child = trace.NonRecordingSpan(
            trace.SpanContext(
                span_context.trace_id,
                0xABC,
                False,
                span_context.trace_flags,
                span_context.trace_state,
            )
        )
        carrier: dict[str, str] = {}
        propagator.inject(carrier, trace.set_span_in_context(child, context))
    assert carrier == {"traceparent": f"00-{TRACE}-{0xABC:016x}-01", "tracestate": header}
    assert not caplog.records


def test_a_changed_tracestate_leads_and_the_rest_follows() -> None:
    from opentelemetry import trace

    propagator = W3CTraceContextPropagator()
    context = propagator.extract(
        {"traceparent": f"00-{TRACE}-{SPAN}-01", "tracestate": "a=1,foo@@bar=2"}
    )
    span_context = trace.get_current_span(context).get_span_context()
    changed = span_context.trace_state.add("mine", "x")
    child = trace.NonRecordingSpan(
        trace.SpanContext(span_context.trace_id, 0xABC, False, span_context.trace_flags, changed)
    )
    carrier: dict[str, str] = {}
    propagator.inject(carrier, trace.set_span_in_context(child, context))
    assert carrier["tracestate"] == "mine=x,a=1,foo@@bar=2"
    # Another trace never gets this one's tracestate.
    other = trace.NonRecordingSpan(trace.SpanContext(1, 2, False, span_context.trace_flags))
    carrier = {}
    propagator.inject(carrier, trace.set_span_in_context(other, context))
    assert "tracestate" not in carrier


def test_baggage_rules() -> None:
    assert parse_baggage("a=1, b=hello%20world;prop=x") == {
        "a": "1",
        "b": "hello world",
    }  # properties are no value
    assert parse_baggage("a=%zz,b=2") == {"b": "2"}  # invalid percent-encoding drops that member
    assert parse_baggage("a=%ff") == {}  # not UTF-8
    assert parse_baggage("a=caf\xe9") == {}  # not ASCII
    assert parse_baggage("a=" + "x" * 8200) == {}  # over 8192 bytes
    assert parse_baggage(",".join(f"k{i}=v" for i in range(65))) == {}  # over 64 members
    assert len(parse_baggage(",".join(f"k{i}=v" for i in range(64)))) == 64


@given(
    st.dictionaries(
        st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True), st.text(max_size=30), max_size=10
    )
)
def test_baggage_round_trips_through_the_propagator(entries: dict[str, str]) -> None:
    from opentelemetry import baggage
    from opentelemetry.context import Context

    context = Context()
    for key, value in entries.items():
        context = baggage.set_baggage(key, value, context)
    carrier: dict[str, str] = {}
    W3CBaggagePropagator().inject(carrier, context)
    assert carrier.get("baggage") == format_baggage(entries)
    assert dict(baggage.get_all(W3CBaggagePropagator().extract(carrier))) == entries


def test_otel_propagators_chooses_the_propagators(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_PROPAGATORS", raising=False)
    assert configured_propagator().fields == {"traceparent", "tracestate", "baggage"}
    monkeypatch.setenv("OTEL_PROPAGATORS", "tracecontext,baggage,b3multi")
    assert {"traceparent", "x-b3-traceid", "baggage"} <= configured_propagator().fields
    monkeypatch.setenv("OTEL_PROPAGATORS", "none")
    assert configured_propagator().fields == set()
    monkeypatch.setenv("OTEL_PROPAGATORS", "tracecontext,zipkin-ish")
    with pytest.raises(ValueError, match=r"OTEL_PROPAGATORS.*'zipkin-ish'.*installed: .*b3multi"):
        configured_propagator()


header_bytes = st.one_of(
    st.binary(max_size=200),
    st.text(alphabet="0123456789abcdefABCDEF-xz", max_size=80).map(str.encode),
    st.builds(
        lambda v, t, s, f, r: f"{v}-{t}-{s}-{f}{r}".encode(),
        st.sampled_from(["00", "01", "ff", "0", "zz", "cc"]),
        st.sampled_from([TRACE, "0" * 32, TRACE[:31], TRACE.upper()]),
        st.sampled_from([SPAN, "0" * 16, SPAN[:15]]),
        st.sampled_from(["01", "00", "0x", "1"]),
        st.sampled_from(["", "-", "-x", "-x-y"]),
    ),
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    traceparent=header_bytes, tracestate=st.binary(max_size=600), baggage=st.binary(max_size=300)
)
def test_malformed_headers_never_raise_and_start_a_new_trace(
    pipeline: Pipeline, traceparent: bytes, tracestate: bytes, baggage: bytes
) -> None:
    """Whatever the caller sends, the request succeeds; an invalid traceparent starts a new trace
    without its tracestate."""
    import anyio

    async def ok(request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    app = Starlette(
        routes=[Route("/", ok)],
        middleware=[Middleware(TracingMiddleware, telemetry=pipeline.telemetry)],
    )
    pipeline.spans.clear()

    async def call() -> httpx.Response:
        # Raw ASGI headers: httpx would refuse some of these bytes on a real socket.
        scope_headers = [
            (b"traceparent", traceparent),
            (b"tracestate", tracestate),
            (b"baggage", baggage),
        ]
        sent: list[dict] = []

        async def receive() -> dict:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": "/",
            "raw_path": b"/",
            "query_string": b"",
            "root_path": "",
            "headers": scope_headers,
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 80),
        }
        await app(scope, receive, send)
        return sent

    sent = anyio.run(call)
    assert sent[0]["status"] == 200
    traceresponse = dict(sent[0]["headers"])[b"traceresponse"].decode()
    parsed = parse_traceparent(traceparent.decode("latin-1"))
    if parsed is None:
        (span,) = pipeline.finished()
        assert span.parent is None
        assert not span.context.trace_state
        assert traceresponse.split("-")[1] == f"{span.context.trace_id:032x}"
    else:
        assert traceresponse.split("-")[1] == f"{parsed.trace_id:032x}"
        # An unsampled caller's span is not recorded (parent-based sampling); a sampled one's is.
        spans = pipeline.finished()
        assert len(spans) == (1 if parsed.trace_flags.sampled else 0)
        if spans:
            assert spans[0].parent.span_id == parsed.span_id


@given(st.integers(1, 2**128 - 1), st.integers(1, 2**64 - 1), st.integers(0, 255))
def test_format_traceparent_round_trips_and_matches_the_w3c_layout(
    trace_id: int, span_id: int, flags: int
) -> None:
    from opentelemetry.trace import SpanContext, TraceFlags

    header = format_traceparent(SpanContext(trace_id, span_id, False, TraceFlags(flags)))
    assert header == f"00-{trace_id:032x}-{span_id:016x}-{flags:02x}"
    parsed = parse_traceparent(header)
    assert parsed is not None and (parsed.trace_id, parsed.span_id, int(parsed.trace_flags)) == (
        trace_id,
        span_id,
        flags,
    )
