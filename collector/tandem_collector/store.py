"""The bounded in-memory trace store.

Spans are kept as parsed protobuf, grouped per trace into ``ResourceSpans`` batches that
are already in the shape Tempo returns, so the receive path only copies messages and all
JSON work happens at query time.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from tandem_collector.ids import TRACE_ID_BYTES

_INVALID_TRACE_ID = bytes(TRACE_ID_BYTES)


def service_name(resource: Resource) -> str:
    """``service.name`` of a resource, or ``""`` when it has none."""
    for kv in resource.attributes:
        if kv.key == "service.name":
            return kv.value.string_value
    return ""


@dataclass
class StoreStats:
    """Counters of what the store took in and what it had to give up."""

    spans_received: int = 0
    spans_accepted: int = 0
    spans_rejected_invalid: int = 0  # no usable trace id
    spans_dropped_limit: int = 0  # over --max-spans-per-trace
    traces_evicted: int = 0  # over --max-traces
    spans_evicted: int = 0  # spans that went with the evicted traces


@dataclass
class AddResult:
    """Outcome of one export, reported back as OTLP partial success."""

    accepted: int = 0
    rejected: int = 0
    reasons: list[str] = field(default_factory=list)

    @property
    def message(self) -> str:
        return "; ".join(self.reasons)


@dataclass(eq=False)
class Trace:
    """One trace's spans, plus what the waterfall and the live/flushed answer need."""

    trace_id: bytes
    batches: list[ResourceSpans] = field(default_factory=list)
    span_count: int = 0
    dropped_spans: int = 0
    updated: float = 0.0  # store clock (monotonic) of the last accepted span
    printed_span_count: int = 0  # span_count when the waterfall was last printed
    print_count: int = 0

    def spans(self) -> Iterator[tuple[Resource, Span]]:
        """Every stored span with the resource it came with."""
        for batch in self.batches:
            for scope_spans in batch.scope_spans:
                for span in scope_spans.spans:
                    yield batch.resource, span


class TraceStore:
    """Keeps the most recently updated traces, within fixed trace and span budgets.

    Not thread-safe: the collector only touches it from its event loop.
    """

    def __init__(
        self,
        max_traces: int = 10_000,
        max_spans_per_trace: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_traces < 1 or max_spans_per_trace < 1:
            raise ValueError("max_traces and max_spans_per_trace must be at least 1")
        self.max_traces = max_traces
        self.max_spans_per_trace = max_spans_per_trace
        self.stats = StoreStats()
        self._clock = clock
        # Ordered least recently updated first, so eviction pops from the front.
        self._traces: OrderedDict[bytes, Trace] = OrderedDict()
        # Traces with spans not yet shown in a waterfall, oldest update first.
        self._unsettled: OrderedDict[bytes, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._traces)

    def __contains__(self, trace_id: object) -> bool:
        return trace_id in self._traces

    def get(self, trace_id: bytes) -> Trace | None:
        return self._traces.get(trace_id)

    def idle_seconds(self, trace: Trace) -> float:
        """Seconds since ``trace`` last got a span."""
        return self._clock() - trace.updated

    def add(self, resource_spans: Iterable[ResourceSpans]) -> AddResult:
        """Store the spans of one export request; never raises on bad data."""
        result = AddResult()
        invalid = limited = 0
        now = self._clock()
        for rs in resource_spans:
            # One output batch per (trace, incoming resource), one scope per incoming scope.
            batches: dict[bytes, ResourceSpans] = {}
            for ss in rs.scope_spans:
                scopes: dict[bytes, ScopeSpans] = {}
                for span in ss.spans:
                    self.stats.spans_received += 1
                    trace_id = span.trace_id
                    if len(trace_id) != TRACE_ID_BYTES or trace_id == _INVALID_TRACE_ID:
                        invalid += 1
                        continue
                    trace = self._traces.get(trace_id)
                    if trace is not None and trace.span_count >= self.max_spans_per_trace:
                        # Not touched: a full trace neither stays fresh nor gets reprinted.
                        trace.dropped_spans += 1
                        limited += 1
                        continue
                    trace = self._touch(trace_id, now)
                    out_scope = scopes.get(trace_id)
                    if out_scope is None:
                        batch = batches.get(trace_id)
                        if batch is None:
                            batch = ResourceSpans(schema_url=rs.schema_url)
                            batch.resource.CopyFrom(rs.resource)
                            batches[trace_id] = batch
                            trace.batches.append(batch)
                        out_scope = batch.scope_spans.add(schema_url=ss.schema_url)
                        out_scope.scope.CopyFrom(ss.scope)
                        scopes[trace_id] = out_scope
                    stored = out_scope.spans.add()
                    stored.CopyFrom(span)
                    # Tempo always prints "status": {} (a non-nullable field in its proto).
                    stored.status.SetInParent()
                    trace.span_count += 1
                    result.accepted += 1
        self._evict()
        self.stats.spans_accepted += result.accepted
        self.stats.spans_rejected_invalid += invalid
        self.stats.spans_dropped_limit += limited
        result.rejected = invalid + limited
        if invalid:
            result.reasons.append(f"{invalid} span(s) without a valid 16-byte trace id")
        if limited:
            result.reasons.append(
                f"{limited} span(s) over the limit of {self.max_spans_per_trace} per trace"
            )
        return result

    def _touch(self, trace_id: bytes, now: float) -> Trace:
        trace = self._traces.get(trace_id)
        if trace is None:
            trace = self._traces[trace_id] = Trace(trace_id)
        else:
            self._traces.move_to_end(trace_id)
        trace.updated = now
        self._unsettled.pop(trace_id, None)
        self._unsettled[trace_id] = None
        return trace

    def _evict(self) -> None:
        while len(self._traces) > self.max_traces:
            trace_id, trace = self._traces.popitem(last=False)
            self._unsettled.pop(trace_id, None)
            self.stats.traces_evicted += 1
            self.stats.spans_evicted += trace.span_count

    def take_settled(self, settle_seconds: float, *, everything: bool = False) -> list[Trace]:
        """Traces that got no span for ``settle_seconds`` since they were last taken.

        ``everything`` takes all pending traces regardless of age (used at shutdown).
        Each trace is returned once per quiet period; new spans make it pending again.
        """
        now = self._clock()
        settled: list[Trace] = []
        for trace_id in list(self._unsettled):
            trace = self._traces.get(trace_id)
            if trace is None:
                del self._unsettled[trace_id]
                continue
            if not everything and now - trace.updated < settle_seconds:
                break  # ordered by update time: everything after is newer
            del self._unsettled[trace_id]
            settled.append(trace)
        return settled
