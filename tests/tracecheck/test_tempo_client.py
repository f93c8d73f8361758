"""TempoClient against the stand-in, which answers as Tempo 3.0.3 does."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from tandem_collector.testing import RunningCollector, running_collector
from tandem_tracecheck.spans import Span
from tandem_tracecheck.tempo import TempoClient, TempoError
from tests.collector.helpers import export, make_span, resource_spans, span_id, trace_id

TRACE = trace_id(0xABC)


@pytest.fixture
def stand_in() -> Iterator[RunningCollector]:
    with running_collector(live_seconds=0) as running:
        yield running


def test_an_unknown_trace_is_empty_not_an_error(stand_in):
    with TempoClient(stand_in.addresses.query_url) as tempo:
        assert tempo.trace("ab" * 16) == []


def test_waiting_polls_past_empty_answers_until_the_spans_arrive(stand_in, monkeypatch):
    """An empty trace means "not there yet": the wait goes on, and returns the spans that come."""
    polled_empty = threading.Event()
    real_trace = TempoClient.trace

    def trace(self: TempoClient, trace_id: str) -> list[Span]:
        spans = real_trace(self, trace_id)
        if not spans:
            polled_empty.set()
        return spans

    monkeypatch.setattr(TempoClient, "trace", trace)
    found: list[Span] = []
    with TempoClient(stand_in.addresses.query_url) as tempo:
        waiter = threading.Thread(
            target=lambda: found.extend(
                tempo.wait_for_trace(TRACE.hex(), spans=1, timeout=30, settle=0.2)
            )
        )
        waiter.start()
        assert polled_empty.wait(30)
        export(
            stand_in.addresses.grpc_endpoint,
            resource_spans("worker", [make_span(TRACE, span_id(1), "POST /tasks")]),
        )
        waiter.join(40)
    assert [(s.service, s.name, s.parent_is_remote) for s in found] == [
        ("worker", "POST /tasks", None)
    ]


def test_an_error_carries_tempos_plain_text_body(stand_in):
    with TempoClient(stand_in.addresses.query_url) as tempo, pytest.raises(TempoError) as error:
        tempo.trace("not-a-trace")
    assert str(error.value) == (
        "GET /api/v2/traces/not-a-trace answered 400: trace IDs can only contain hex "
        "characters: invalid character 'n' at position 1"
    )


def test_a_404_is_an_error_not_a_missing_trace(stand_in):
    """Tempo 3.0.3 never answers 404 for a trace id: a 404 means the URL misses the API."""
    with (
        TempoClient(f"{stand_in.addresses.query_url}/tempo") as tempo,
        pytest.raises(TempoError, match="answered 404"),
    ):
        tempo.trace("ab" * 16)
