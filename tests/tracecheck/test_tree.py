"""The trace matcher: cross-process links checked by structure always, by span flag when
Tempo reports one (it drops span flags once it flushes a trace to a block)."""

from __future__ import annotations

import itertools
from dataclasses import replace

from tandem_tracecheck.spans import Span
from tandem_tracecheck.tree import Expect, check_tree, work_trace

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"  # the span id of the traceparent the caller sent


def spans_for(
    expected: Expect, *, flags: bool, root_parent: str | None = CALLER_SPAN
) -> list[Span]:
    """A trace that matches `expected`; with `flags`, remote parents carry Tempo's flag."""
    ids = (f"{n:016x}" for n in itertools.count(1))
    spans: list[Span] = []

    def add(want: Expect, parent: str | None, start: int) -> None:
        span_id = next(ids)
        spans.append(
            Span(
                trace_id=TRACE_ID,
                span_id=span_id,
                parent_span_id=parent,
                name=want.name,
                kind=want.kind,
                service=want.service,
                status=want.status or "UNSET",
                start_ns=start,
                end_ns=start + 1000,
                attributes=dict(want.attributes),
                resource={"service.name": want.service, "service.namespace": "tandem"},
                parent_is_remote=(want.remote_parent if flags else None),
            )
        )
        for offset, child in enumerate(want.children, start=1):
            add(child, span_id, start + offset)

    add(expected, root_parent, 0)
    return spans


def test_a_stored_trace_is_checked_by_structure_only():
    """Tempo answered without flags: every link still checked, and the output says how."""
    match = check_tree(
        spans_for(work_trace(1), flags=False),
        work_trace(1),
        root_parent=CALLER_SPAN,
        trace_id=TRACE_ID,
    )
    assert match.problems == []
    # The caller -> gateway, gateway -> worker and worker -> gateway (quota) links.
    assert (match.links_by_structure, match.links_by_flag) == (3, 0)
    assert match.remote_parents() == (
        "3 cross-process links checked by structure only: "
        "Tempo reported no span flags (a trace flushed to a block has none)"
    )


def test_a_live_trace_is_checked_by_structure_and_by_flag():
    match = check_tree(spans_for(work_trace(3), flags=True), work_trace(3), root_parent=CALLER_SPAN)
    assert match.problems == []
    assert (match.links_by_structure, match.links_by_flag) == (7, 7)
    assert match.remote_parents() == "7 cross-process links checked by structure and by span flag"


def test_a_link_whose_flag_says_local_fails():
    spans = spans_for(work_trace(1), flags=True)
    worker = next(i for i, s in enumerate(spans) if s.name == "POST /tasks")
    spans[worker] = replace(spans[worker], parent_is_remote=False)
    problems = check_tree(spans, work_trace(1), root_parent=CALLER_SPAN).problems
    assert any(
        "POST /tasks': its parent is in another process but its span flags say it is not remote"
        in p
        for p in problems
    ), problems


def test_a_remote_parent_in_the_same_service_fails_by_structure():
    """Flags or not, a cross-process link whose parent is in the span's own service is wrong."""
    expected = Expect(
        "gateway",
        "CLIENT",
        "POST",
        children=(Expect("gateway", "SERVER", "POST /tasks", remote_parent=True),),
    )
    for flags in (False, True):
        match = check_tree(spans_for(expected, flags=flags, root_parent=None), expected)
        assert match.links_by_structure == 0
        assert any(
            "its parent gateway CLIENT 'POST' [UNSET] is in the same service" in p
            for p in match.problems
        ), match.problems


def test_a_root_not_under_the_traceparent_sent_fails():
    spans = spans_for(work_trace(1), flags=False, root_parent="1111222233334444")
    match = check_tree(spans, work_trace(1), root_parent=CALLER_SPAN, trace_id=TRACE_ID)
    assert match.problems[0] == f"expected one root span with parent {CALLER_SPAN}, found 0: []"
    assert match.links_by_structure == 0


def test_spans_of_another_trace_than_the_traceparent_sent_fail():
    spans = spans_for(work_trace(1), flags=False)
    match = check_tree(spans, work_trace(1), root_parent=CALLER_SPAN, trace_id="ab" * 16)
    assert match.problems[0] == f"the spans are in trace {TRACE_ID}, not in {'ab' * 16}"


def test_a_root_expecting_a_caller_without_a_traceparent_fails():
    spans = spans_for(work_trace(1), flags=False, root_parent=None)
    problems = check_tree(spans, work_trace(1), root_parent=None).problems
    assert (
        "/gateway SERVER 'GET /api/work': expects its parent in the caller's process, has none"
        in problems
    )


def test_quota_checks_must_arrive_on_the_internal_port_when_it_is_given():
    """With internal_port, a quota span whose server.port is another port (the public one,
    say) is a difference; without it, the port is not checked."""
    on_internal = spans_for(work_trace(2, internal_port=8082), flags=False)
    assert not check_tree(
        on_internal, work_trace(2, internal_port=8082), root_parent=CALLER_SPAN
    ).problems
    on_public = [
        replace(s, attributes={**s.attributes, "server.port": 8080})
        if s.name == "GET /internal/quota"
        else s
        for s in on_internal
    ]
    problems = check_tree(
        on_public, work_trace(2, internal_port=8082), root_parent=CALLER_SPAN
    ).problems
    assert sum("server.port" in p and "8082" in p for p in problems) == 2, problems
    assert not check_tree(on_public, work_trace(2), root_parent=CALLER_SPAN).problems
