"""The console waterfall renderer, on hand-built traces."""

from __future__ import annotations

from tandem_collector.waterfall import BLOCK, SpanRow, render, tree_order

MS = 1_000_000
TRACE_ID = bytes.fromhex("5b8efff798038103d269b633813fc700")


def row(
    sid: int,
    parent: int,
    name: str,
    start_ms: float,
    end_ms: float,
    service: str = "gateway",
    kind: int = 2,
) -> SpanRow:
    return SpanRow(
        span_id=sid.to_bytes(8, "big"),
        parent_id=parent.to_bytes(8, "big") if parent else b"",
        service=service,
        name=name,
        kind=kind,
        start_ns=int(start_ms * MS),
        end_ns=int(end_ms * MS),
    )


# Given in shuffled order on purpose.
ROWS = [
    row(4, 2, "SELECT", 3, 5, service="worker", kind=3),
    row(3, 1, "POST /late", 12, 18, kind=3),
    row(2, 1, "POST /work", 2, 10, kind=3),
    row(1, 0, "GET /api/work", 0, 20),
    row(9, 77, "orphan", 1, 2, service="worker", kind=1),
]


def test_roots_first_children_by_start_time_with_depth():
    ordered = [(depth, r.name) for depth, r in tree_order(ROWS)]
    assert ordered == [
        (0, "GET /api/work"),
        (1, "POST /work"),
        (2, "SELECT"),
        (1, "POST /late"),
        (0, "orphan"),  # its parent is not in the trace, so it is shown as a root
    ]


def test_render_header_indentation_and_bars():
    text = render(TRACE_ID, ROWS, width=20)
    lines = text.splitlines()

    assert lines[0] == "trace 5b8efff798038103d269b633813fc700 · 5 spans · 20.00 ms"
    labels = [line.split("│")[0].rstrip() for line in lines[1:]]
    assert labels[0].startswith("gateway  GET /api/work [server]")
    assert labels[1].startswith("  gateway  POST /work [client]")
    assert labels[2].startswith("    worker  SELECT [client]")
    assert labels[3].startswith("  gateway  POST /late [client]")
    assert labels[4].startswith("worker  orphan [internal]")
    assert "20.00 ms" in labels[0] and "8.00 ms" in labels[1]

    bars = [line.split("│")[1] for line in lines[1:]]
    assert all(len(bar) == 20 for bar in bars)
    assert bars[0] == BLOCK * 20  # the root spans the whole trace
    assert bars[1] == " " * 2 + BLOCK * 8 + " " * 10  # 2..10 ms of 20 ms, 1 cell per ms
    assert bars[3] == " " * 12 + BLOCK * 6 + " " * 2
    # Columns line up: every bar starts at the same offset.
    assert len({line.index("│") for line in lines[1:]}) == 1


def test_updated_marker_dropped_count_and_tiny_spans():
    rows = [row(1, 0, "root", 0, 1000), row(2, 1, "blink", 500, 500.001)]
    text = render(TRACE_ID, rows, width=10, updated=True, dropped=3)
    header, _, blink_line = text.splitlines()
    assert header.endswith("· 3 dropped (updated)")
    assert blink_line.split("│")[1] == " " * 5 + BLOCK + " " * 4  # at least one cell


def test_parent_cycles_do_not_lose_spans():
    rows = [row(1, 2, "a", 0, 1), row(2, 1, "b", 1, 2), row(3, 0, "root", 0, 5)]
    names = [r.name for _, r in tree_order(rows)]
    assert sorted(names) == ["a", "b", "root"]
    assert names[0] == "root"
