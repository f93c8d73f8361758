"""The expected shape of a trace, and a matcher that explains any difference."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from tandem_tracecheck.spans import Span


@dataclass(frozen=True)
class Expect:
    """One expected span: who made it, its kind and name, the attributes it must carry, its
    children, and whether its parent is in another process (the caller, or another service).
    """

    service: str
    kind: str
    name: str
    attributes: dict[str, Any] = field(default_factory=dict)
    status: str | None = None
    remote_parent: bool = False
    children: tuple[Expect, ...] = ()

    def __str__(self) -> str:
        return f"{self.service} {self.kind} {self.name!r}"

    def size(self) -> int:
        return 1 + sum(child.size() for child in self.children)


def work_trace(tasks: int, *, caller: bool = True, internal_port: int | None = None) -> Expect:
    """The trace of `GET /api/work?tasks=N`: 1 + 6N spans across gateway and worker.

    With `caller`, the request carried a traceparent, so the root's parent is remote.
    With `internal_port`, the quota checks must have arrived on that port (the
    gateway's internal listener), as their `server.port` says.
    """
    quota_attributes: dict[str, Any] = {
        "http.route": "/internal/quota",
        "http.response.status_code": 200,
    }
    if internal_port is not None:
        quota_attributes["server.port"] = internal_port
    quota = Expect("gateway", "SERVER", "GET /internal/quota", quota_attributes, remote_parent=True)
    task = Expect(
        "worker",
        "SERVER",
        "POST /tasks",
        {"http.route": "/tasks", "http.request.method": "POST", "http.response.status_code": 200},
        remote_parent=True,
        children=(
            Expect("worker", "INTERNAL", "compute"),
            Expect(
                "worker",
                "CLIENT",
                "GET",
                {"http.request.method": "GET", "http.response.status_code": 200},
                children=(quota,),
            ),
            Expect("worker", "INTERNAL", "publish result"),
        ),
    )
    call = Expect(
        "gateway",
        "CLIENT",
        "POST",
        {"http.request.method": "POST", "http.response.status_code": 200},
        children=(task,),
    )
    return Expect(
        "gateway",
        "SERVER",
        "GET /api/work",
        {
            "http.route": "/api/work",
            "http.request.method": "GET",
            "http.response.status_code": 200,
            "url.path": "/api/work",
        },
        remote_parent=caller,
        children=(call,) * tasks,
    )


def worker_failure_trace(*, caller: bool = True) -> Expect:
    """The trace of `GET /api/work?tasks=1&fail=worker`: the worker answers 500, the gateway
    502, and its SERVER and CLIENT spans and the worker's SERVER span are ERROR (3 spans)."""
    task = Expect(
        "worker",
        "SERVER",
        "POST /tasks",
        {"http.response.status_code": 500, "error.type": "500"},
        status="ERROR",
        remote_parent=True,
    )
    call = Expect(
        "gateway",
        "CLIENT",
        "POST",
        {"http.response.status_code": 500, "error.type": "500"},
        status="ERROR",
        children=(task,),
    )
    return Expect(
        "gateway",
        "SERVER",
        "GET /api/work",
        {"http.response.status_code": 502, "error.type": "502"},
        status="ERROR",
        remote_parent=caller,
        children=(call,),
    )


@dataclass
class TreeMatch:
    """What comparing a trace with its expected shape found, and what it could check."""

    problems: list[str] = field(default_factory=list)
    # Cross-process links (a span whose parent is in another process) checked by structure:
    # the parent is the caller's span named by the traceparent sent, or a span of another
    # service in the trace whose ids the span carries. This holds for any stored trace.
    links_by_structure: int = 0
    # Of those, the links whose remote-parent flag Tempo reported, and which were checked by
    # it too. Tempo drops span flags when it flushes a trace from its live store to a block.
    links_by_flag: int = 0

    def remote_parents(self) -> str:
        """Which of the two checks the cross-process links got, for the check's output."""
        links, flagged = self.links_by_structure, self.links_by_flag
        if not links:
            return "no cross-process link checked"
        if flagged == links:
            return f"{links} cross-process links checked by structure and by span flag"
        if not flagged:
            return (
                f"{links} cross-process links checked by structure only: Tempo reported "
                "no span flags (a trace flushed to a block has none)"
            )
        return (
            f"{links} cross-process links checked by structure, {flagged} of them also by "
            "span flag (Tempo reported flags for those only)"
        )


def check_tree(
    spans: list[Span],
    expected: Expect,
    *,
    root_parent: str | None = None,
    trace_id: str | None = None,
) -> TreeMatch:
    """Compare a trace with its expected shape: the differences, and the links checked.

    The root must have `root_parent` as its parent (None: no parent); with `trace_id`,
    every span must be in that trace. `root_parent` and `trace_id` are the ids of the
    traceparent the caller sent. Every span must be accounted for: extra spans are
    differences too.
    """
    result = TreeMatch()
    problems = result.problems
    if len({span.trace_id for span in spans}) > 1:
        problems.append(
            f"spans of several traces were mixed: {sorted({s.trace_id for s in spans})}"
        )
    elif trace_id is not None and spans and spans[0].trace_id != trace_id:
        problems.append(f"the spans are in trace {spans[0].trace_id}, not in {trace_id}")
    ids = {span.span_id for span in spans}
    children: dict[str, list[Span]] = defaultdict(list)
    for span in spans:
        if span.parent_span_id in ids:
            children[span.parent_span_id].append(span)
    roots = [s for s in spans if s.parent_span_id not in ids and s.parent_span_id == root_parent]
    if len(roots) != 1:
        problems.append(
            f"expected one root span with parent {root_parent}, found {len(roots)}: "
            f"{[str(r) for r in roots]}"
        )
        problems.append(f"trace as received:\n{render(spans)}")
        return result
    matched: set[str] = set()
    _match(roots[0], None, expected, children, result, matched, path="")
    extra = [s for s in spans if s.span_id not in matched]
    if extra:
        problems.append(f"unexpected spans: {[str(s) for s in extra]}")
    if len(spans) != expected.size():
        problems.append(f"expected {expected.size()} spans, received {len(spans)}")
    if problems:
        problems.append(f"trace as received:\n{render(spans)}")
    return result


def match_tree(spans: list[Span], expected: Expect, *, root_parent: str | None = None) -> list[str]:
    """The differences between a trace and its expected shape (empty when it matches)."""
    return check_tree(spans, expected, root_parent=root_parent).problems


def _match(
    span: Span,
    parent: Span | None,
    expected: Expect,
    children: dict[str, list[Span]],
    result: TreeMatch,
    matched: set[str],
    path: str,
) -> None:
    here = f"{path}/{expected}"
    problems = result.problems
    matched.add(span.span_id)
    if (span.service, span.kind, span.name) != (expected.service, expected.kind, expected.name):
        problems.append(f"{here}: found {span}")
        return
    for key, value in expected.attributes.items():
        if span.attributes.get(key) != value:
            problems.append(
                f"{here}: attribute {key}={span.attributes.get(key)!r}, expected {value!r}"
            )
    if expected.status is not None and span.status != expected.status:
        problems.append(f"{here}: status {span.status}, expected {expected.status}")
    if expected.remote_parent:
        _check_remote_parent(span, parent, here, result)
    namespace = span.resource.get("service.namespace")
    if namespace != "tandem":
        problems.append(f"{here}: resource service.namespace={namespace!r}, expected 'tandem'")
    pool = sorted(children.get(span.span_id, []), key=lambda s: s.start_ns)
    for want in expected.children:
        candidate = next(
            (
                s
                for s in pool
                if (s.service, s.kind, s.name) == (want.service, want.kind, want.name)
            ),
            None,
        )
        if candidate is None:
            problems.append(f"{here}: missing child {want}")
            continue
        pool.remove(candidate)
        _match(candidate, span, want, children, result, matched, here)


def _check_remote_parent(span: Span, parent: Span | None, here: str, result: TreeMatch) -> None:
    """A cross-process link: by structure always, by span flag when Tempo reports one.

    For the root (`parent` None), `check_tree` already chose it by the caller's span id.
    """
    if parent is None and span.parent_span_id is None:
        result.problems.append(f"{here}: expects its parent in the caller's process, has none")
        return
    if parent is not None and parent.service == span.service:
        result.problems.append(
            f"{here}: its parent {parent} is in the same service, not in another process"
        )
        return
    result.links_by_structure += 1
    if span.parent_is_remote is None:
        return
    result.links_by_flag += 1
    if not span.parent_is_remote:
        result.problems.append(
            f"{here}: its parent is in another process but its span flags say it is not remote"
        )


def render(spans: list[Span]) -> str:
    """The trace as an indented tree, for failure messages."""
    by_parent: dict[str | None, list[Span]] = defaultdict(list)
    ids = {s.span_id for s in spans}
    for span in spans:
        by_parent[span.parent_span_id if span.parent_span_id in ids else None].append(span)
    lines: list[str] = []

    def walk(parent: str | None, depth: int) -> None:
        for span in sorted(by_parent.get(parent, []), key=lambda s: s.start_ns):
            lines.append(f"{'  ' * depth}{span} {span.span_id} parent={span.parent_span_id}")
            walk(span.span_id, depth + 1)

    walk(None, 0)
    return "\n".join(lines)
