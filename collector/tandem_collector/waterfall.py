"""Console waterfall of a trace: an indented span tree with time bars.

::

    trace 5b8efff798038103d269b633813fc700 · 3 spans · 12.50 ms
    gateway  GET /api/work [server]        12.50 ms │████████████████████████████████████████│
      gateway  POST [client]                8.00 ms │    ████████████████████████████        │
        worker  POST /work [server]         6.00 ms │      ████████████████████              │
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from tandem_collector.store import Trace, service_name

KIND_NAMES = {
    0: "unspecified",
    1: "internal",
    2: "server",
    3: "client",
    4: "producer",
    5: "consumer",
}
BLOCK = "█"
MAX_LABEL_WIDTH = 64


@dataclass(frozen=True)
class SpanRow:
    """What the waterfall needs of one span."""

    span_id: bytes
    parent_id: bytes
    service: str
    name: str
    kind: int
    start_ns: int
    end_ns: int

    @property
    def duration_ns(self) -> int:
        return max(0, self.end_ns - self.start_ns)


def rows_of(trace: Trace) -> list[SpanRow]:
    """The trace's spans as rows."""
    return [
        SpanRow(
            span.span_id,
            span.parent_span_id,
            service_name(resource) or "?",
            span.name,
            span.kind,
            span.start_time_unix_nano,
            span.end_time_unix_nano,
        )
        for resource, span in trace.spans()
    ]


def tree_order(rows: Iterable[SpanRow]) -> list[tuple[int, SpanRow]]:
    """(depth, row) in display order: roots by start time, each followed by its subtree.

    A span whose parent is not in the trace is a root; spans caught in a parent cycle
    (never reachable from a root) are appended as roots so none is lost.
    """
    rows = list(rows)
    by_key = lambda row: (row.start_ns, row.end_ns, row.name)  # noqa: E731
    ids = {row.span_id for row in rows}
    children: dict[bytes, list[SpanRow]] = {}
    roots: list[SpanRow] = []
    for row in rows:
        if row.parent_id and row.parent_id in ids and row.parent_id != row.span_id:
            children.setdefault(row.parent_id, []).append(row)
        else:
            roots.append(row)
    ordered: list[tuple[int, SpanRow]] = []
    visited: set[int] = set()

    def walk(start: list[SpanRow]) -> None:
        # Iterative DFS: deep traces must not hit the recursion limit.
        stack = [(0, row) for row in sorted(start, key=by_key, reverse=True)]
        while stack:
            depth, row = stack.pop()
            if id(row) in visited:
                continue
            visited.add(id(row))
            ordered.append((depth, row))
            kids = sorted(children.get(row.span_id, ()), key=by_key, reverse=True)
            stack.extend((depth + 1, kid) for kid in kids)

    walk(roots)
    leftovers = [row for row in rows if id(row) not in visited]
    while leftovers:  # cycles: start from the earliest unvisited span
        walk([min(leftovers, key=by_key)])
        leftovers = [row for row in leftovers if id(row) not in visited]
    return ordered


def _bar(row: SpanRow, origin: int, total: int, width: int) -> str:
    begin = min(width - 1, math.floor((row.start_ns - origin) * width / total))
    begin = max(0, begin)
    end = math.ceil((row.end_ns - origin) * width / total)
    end = min(width, max(begin + 1, end))  # every span gets at least one cell
    return " " * begin + BLOCK * (end - begin) + " " * (width - end)


def _truncate(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def render(
    trace_id: bytes,
    rows: Iterable[SpanRow],
    *,
    width: int = 40,
    updated: bool = False,
    dropped: int = 0,
) -> str:
    """The waterfall text for one trace (ends with a newline)."""
    ordered = tree_order(rows)
    if not ordered:
        return f"trace {trace_id.hex()} · 0 spans\n"
    origin = min(row.start_ns for _, row in ordered)
    finish = max(max(row.end_ns, row.start_ns) for _, row in ordered)
    total = max(1, finish - origin)
    header = f"trace {trace_id.hex()} · {len(ordered)} spans · {total / 1e6:.2f} ms"
    if dropped:
        header += f" · {dropped} dropped"
    if updated:
        header += " (updated)"
    labels = [
        _truncate(
            "  " * depth + f"{row.service}  {row.name} [{KIND_NAMES.get(row.kind, str(row.kind))}]",
            MAX_LABEL_WIDTH,
        )
        for depth, row in ordered
    ]
    label_width = max(len(label) for label in labels)
    lines = [header]
    for label, (_, row) in zip(labels, ordered, strict=True):
        lines.append(
            f"{label.ljust(label_width)} {row.duration_ns / 1e6:9.2f} ms "
            f"│{_bar(row, origin, total, width)}│"
        )
    return "\n".join(lines) + "\n"


def render_trace(trace: Trace, *, width: int = 40) -> str:
    """Waterfall of a stored trace, marked updated if it was printed before."""
    return render(
        trace.trace_id,
        rows_of(trace),
        width=width,
        updated=trace.print_count > 0,
        dropped=trace.dropped_spans,
    )
