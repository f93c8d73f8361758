"""Tandem's tracer: the SDK's own Span, started without the SDK tracer's generic per-call work.

`Tracer.start_span` spends about 18 µs on a server span like Tandem's, most
of it passing each attribute through the generic validation (any type, any
key, length limits) and copying the span for the processors at its end.
Most spans here carry only plain attributes: non-empty string keys and
str/int/float/bool values, which that validation keeps unchanged.
`RequestTracer` starts the same SDK `Span` (the configured sampler, id
generator, processors, limits, resource and scope all apply) and stores
such attributes directly; anything else, or a configured length or count
limit they could reach, takes the SDK's path. The span behaves as any SDK
span afterwards: code may set attributes, add events or record exceptions
on it. tests/telemetry/test_spans.py holds it to `Tracer.start_span`, field
for field.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from time import time_ns
from typing import Any

from opentelemetry import trace as trace_api
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, Tracer
from opentelemetry.sdk.util import BoundedList
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags

_PLAIN_TYPES = frozenset({str, int, float, bool})
_UNSET = Status(StatusCode.UNSET)
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_NOT_SAMPLED = TraceFlags(TraceFlags.DEFAULT)


def _plain(attributes: Mapping[str, Any]) -> bool:
    """True when the SDK's validation would keep every pair unchanged."""
    for key, value in attributes.items():
        if type(key) is not str or not key or type(value) not in _PLAIN_TYPES:
            return False
    return True


class RequestSpan(Span):
    """An SDK span whose plain attributes skip the per-value validation; see the module docstring."""

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        bounded = self._attributes
        if (
            self._end_time is None
            and bounded.max_value_len is None
            and (bounded.maxlen is None or len(bounded) + len(attributes) <= bounded.maxlen)
            and _plain(attributes)
        ):
            with self._lock:
                if self._end_time is None:
                    stored = bounded._dict  # noqa: SLF001
                    for key, value in attributes.items():
                        # What _set_items stores: a key set again moves to the end.
                        if key in stored:
                            del stored[key]
                        stored[key] = value
                    return
        super().set_attributes(attributes)

    def _readable_span(self) -> ReadableSpan:
        # What Span.end hands the processors. The SDK copies the span into a
        # ReadableSpan; an ended span already refuses every change (attributes,
        # name, status, events, links), so it serves as its own snapshot.
        return self


class RequestTracer(trace_api.Tracer):
    """Tandem's tracer: an SDK tracer's spans, started as `Tracer.start_span` would start them.

    The pipeline's `tracer` (and `tandem_telemetry.get_tracer()`), used by the
    middleware, the client and application code alike. Spans come from the
    wrapped SDK tracer's configuration, read at every start: sampler, id
    generator, processors, limits, resource, scope and enabled state.
    """

    def __init__(self, tracer: Tracer) -> None:
        self._tracer = tracer

    def start_span(
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Mapping[str, Any] | None = None,
        links: Sequence[Link] | None = (),
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> trace_api.Span:
        tracer = self._tracer
        attributes = attributes or {}
        links = links or ()
        parent_span_context: SpanContext | None = trace_api.get_current_span(context).get_span_context()
        if not tracer._is_enabled():  # noqa: SLF001 - the tracer configurator's switch
            return NonRecordingSpan(parent_span_context)
        if parent_span_context is None or not parent_span_context.is_valid:
            parent_span_context = None
            trace_id = tracer.id_generator.generate_trace_id()
            random_trace_id = tracer.id_generator.is_trace_id_random()
        else:
            trace_id = parent_span_context.trace_id
            random_trace_id = parent_span_context.trace_flags.random_trace_id
        sampling = tracer.sampler.should_sample(context, trace_id, name, kind, attributes, links)
        flags = _SAMPLED if sampling.decision.is_sampled() else _NOT_SAMPLED
        if random_trace_id:
            flags = TraceFlags(flags | TraceFlags.RANDOM_TRACE_ID)
        span_context = SpanContext(trace_id, tracer.id_generator.generate_span_id(), False, flags, sampling.trace_state)
        record_end_metrics = tracer._tracer_metrics.start_span(parent_span_context, sampling.decision)  # noqa: SLF001
        if not sampling.decision.is_recording():
            return NonRecordingSpan(span_context)
        limits = tracer._span_limits  # noqa: SLF001
        span_attributes = sampling.attributes if sampling.attributes is not None else attributes
        if (
            limits.max_span_attribute_length is None
            and (limits.max_span_attributes is None or len(span_attributes) <= limits.max_span_attributes)
            and _plain(span_attributes)
        ):
            bounded = BoundedAttributes(limits.max_span_attributes, None, False, None)
            bounded._dict.update(span_attributes)  # noqa: SLF001 - what the SDK's validation would store
        else:
            bounded = BoundedAttributes(limits.max_span_attributes, span_attributes, False, limits.max_span_attribute_length)
        span = RequestSpan.__new__(RequestSpan)
        # Every field Span.__init__ sets; test_spans checks the list against the SDK's.
        span._name = name  # noqa: SLF001
        span._context = span_context  # noqa: SLF001
        span._kind = kind  # noqa: SLF001
        span._instrumentation_info = tracer.instrumentation_info  # noqa: SLF001
        span._instrumentation_scope = tracer._instrumentation_scope  # noqa: SLF001
        span._parent = parent_span_context  # noqa: SLF001
        span._start_time = start_time if start_time is not None else time_ns()  # noqa: SLF001
        span._end_time = None  # noqa: SLF001
        span._attributes = bounded  # noqa: SLF001
        span._events = BoundedList(limits.max_events)  # noqa: SLF001
        span._resource = tracer.resource  # noqa: SLF001
        span._status = _UNSET  # noqa: SLF001
        span._sampler = tracer.sampler  # noqa: SLF001
        span._trace_config = None  # noqa: SLF001
        span._record_exception = record_exception  # noqa: SLF001
        span._set_status_on_exception = set_status_on_exception  # noqa: SLF001
        span._span_processor = tracer.span_processor  # noqa: SLF001
        span._limits = limits  # noqa: SLF001
        span._lock = threading.Lock()  # noqa: SLF001
        span._links = span._new_links(links)  # noqa: SLF001
        span._record_end_metrics = record_end_metrics  # noqa: SLF001
        tracer.span_processor.on_start(span, parent_context=context)
        return span

    # The SDK's own: self.start_span, then use_span (as a context manager or a decorator).
    start_as_current_span = Tracer.start_as_current_span
