"""The expected shape of a trace, and a matcher that explains any difference."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from tandem_tracecheck.spans import Span


@dataclass(frozen=True)
class Expect:
    """One expected span: who made it, its kind and name, attributes it must carry, and its children."""

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


def work_trace(tasks: int, *, caller: bool = True) -> Expect:
    """The trace of `GET /api/work?tasks=N`: 1 + 6N spans across gateway and worker.

    With `caller`, the request carried a traceparent, so the root's parent is remote.
    """
    quota = Expect(
        "gateway",
        "SERVER",
        "GET /internal/quota",
        {"http.route": "/internal/quota", "http.response.status_code": 200},
        remote_parent=True,
    )
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


def match_tree(spans: list[Span], expected: Expect, *, root_parent: str | None = None) -> list[str]:
    """Compare a trace with its expected shape; return the differences (empty when it matches).

    The root must have `root_parent` as its parent (None: no parent). Every
    span must be accounted for: extra spans are differences too.
    """
    problems: list[str] = []
    if len({span.trace_id for span in spans}) > 1:
        problems.append(
            f"spans of several traces were mixed: {sorted({s.trace_id for s in spans})}"
        )
    ids = {span.span_id for span in spans}
    children: dict[str, list[Span]] = defaultdict(list)
    for span in spans:
        if span.parent_span_id in ids:
            children[span.parent_span_id].append(span)
    roots = [s for s in spans if s.parent_span_id not in ids and s.parent_span_id == root_parent]
    if len(roots) != 1:
        problems.append(
            f"expected one root span with parent {root_parent}, found {len(roots)}: {[str(r) for r in roots]}"
        )
        return problems + [f"trace as received:\n{render(spans)}"]
    matched: set[str] = set()
    _match(roots[0], expected, children, problems, matched, path="")
    extra = [s for s in spans if s.span_id not in matched]
    if extra:
        problems.append(f"unexpected spans: {[str(s) for s in extra]}")
    if len(spans) != expected.size():
        problems.append(f"expected {expected.size()} spans, received {len(spans)}")
    if problems:
        problems.append(f"trace as received:\n{render(spans)}")
    return problems


def _match(
    span: Span, expected: Expect, children: dict, problems: list[str], matched: set[str], path: str
) -> None:
    here = f"{path}/{expected}"
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
    if expected.remote_parent and span.parent_is_remote is False:
        problems.append(f"{here}: its parent is in another process but is not marked remote")
    if span.resource.get("service.namespace") != "tandem":
        problems.append(
            f"{here}: resource service.namespace={span.resource.get('service.namespace')!r}, expected 'tandem'"
        )
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
        _match(candidate, want, children, problems, matched, here)


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
