"""TraceStore: grouping, bounded memory, settling and idle time."""

from __future__ import annotations

from tandem_collector.store import TraceStore
from tests.collector.helpers import make_span, resource_spans, span_id, trace_id


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def add_trace(store: TraceStore, n: int, spans: int = 1, service: str = "gateway"):
    tid = trace_id(n)
    batch = resource_spans(
        service, [make_span(tid, span_id(i + 1), f"span-{i}", start_ms=i) for i in range(spans)]
    )
    return store.add([batch])


def test_groups_spans_per_trace_with_resource_and_scope():
    store = TraceStore()
    first, second = trace_id(1), trace_id(2)
    batch = resource_spans(
        "gateway",
        [
            make_span(first, span_id(1), "root", duration_ms=10),
            make_span(second, span_id(2), "other"),
            make_span(first, span_id(3), "child", parent=span_id(1), start_ms=2, duration_ms=3),
        ],
        service_namespace="tandem",
    )
    result = store.add([batch])

    assert (result.accepted, result.rejected) == (3, 0)
    trace = store.get(first)
    assert trace is not None and trace.span_count == 2
    assert [s.name for _, s in trace.spans()] == ["root", "child"]
    (stored,) = trace.batches
    assert stored.resource == batch.resource
    assert stored.scope_spans[0].scope.name == "tandem.tests"
    assert store.get(second).span_count == 1


def test_evicts_least_recently_updated_traces_and_counts_them():
    clock = FakeClock()
    store = TraceStore(max_traces=3, clock=clock)
    for n in range(1, 4):
        add_trace(store, n, spans=2)
    add_trace(store, 1)  # trace 1 is fresh again, so trace 2 is now the oldest
    add_trace(store, 4)
    add_trace(store, 5)

    assert len(store) == 3
    assert [n for n in range(1, 6) if trace_id(n) in store] == [1, 4, 5]
    assert store.stats.traces_evicted == 2
    assert store.stats.spans_evicted == 4


def test_caps_spans_per_trace_and_reports_partial_success():
    store = TraceStore(max_spans_per_trace=2)
    result = add_trace(store, 1, spans=5)

    assert (result.accepted, result.rejected) == (2, 3)
    assert "3 span(s) over the limit of 2 per trace" in result.message
    trace = store.get(trace_id(1))
    assert trace.span_count == 2 and trace.dropped_spans == 3
    assert store.stats.spans_dropped_limit == 3
    assert store.stats.spans_received == 5


def test_rejects_spans_without_a_valid_trace_id():
    store = TraceStore()
    batch = resource_spans(
        "gateway",
        [
            make_span(b"\x01\x02", span_id(1), "short id"),
            make_span(bytes(16), span_id(2), "all zero id"),
            make_span(trace_id(7), span_id(3), "fine"),
        ],
    )
    result = store.add([batch])

    assert (result.accepted, result.rejected) == (1, 2)
    assert store.stats.spans_rejected_invalid == 2
    assert len(store) == 1


def test_take_settled_waits_for_quiet_period_and_reoffers_updated_traces():
    clock = FakeClock()
    store = TraceStore(clock=clock)
    add_trace(store, 1)
    clock.now += 0.5
    add_trace(store, 2)

    clock.now += 0.6  # trace 1 quiet for 1.1 s, trace 2 for 0.6 s
    assert [t.trace_id for t in store.take_settled(1.0)] == [trace_id(1)]
    assert store.take_settled(1.0) == []

    clock.now += 0.5
    assert [t.trace_id for t in store.take_settled(1.0)] == [trace_id(2)]

    add_trace(store, 1)  # a late span makes trace 1 pending again
    assert store.take_settled(1.0) == []
    assert [t.trace_id for t in store.take_settled(1.0, everything=True)] == [trace_id(1)]


def test_full_trace_is_not_refreshed_by_dropped_spans():
    clock = FakeClock()
    store = TraceStore(max_spans_per_trace=1, clock=clock)
    add_trace(store, 1)
    clock.now += 5
    assert len(store.take_settled(1.0)) == 1
    add_trace(store, 1)  # dropped: over the limit
    assert store.take_settled(0.0) == []
    assert store.idle_seconds(store.get(trace_id(1))) == 5  # still idle since its last span
