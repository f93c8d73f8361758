"""Every tracecheck check passes on a trace Tempo has flushed to a block, which has lost its
span flags, as on a live one: cross-process links are checked by structure either way, and
by flag only when Tempo reports it.

Two stand-ins: one answers every trace as flushed (`--live-seconds 0`, as Tempo does a few
seconds after a trace's last span, and as `helm test` often sees it), the other keeps every
trace live.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tandem_localstack.stack import Stack, free_collector_ports
from tandem_tracecheck import scenarios
from tandem_tracecheck.scenarios import CheckedTrace, Target

pytestmark = pytest.mark.local_stack

LIVE_SECONDS = {"flushed": "0", "live": "3600"}


@pytest.fixture(scope="module", params=sorted(LIVE_SECONDS))
def stand_in(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Target]]:
    """(mode, target): a collector in that mode, with a worker and a gateway exporting to it."""
    mode = request.param
    stack = Stack(tmp_path_factory.mktemp(f"stack-{mode}"))
    try:
        collector = stack.start_collector(
            free_collector_ports(),
            name=f"collector-{mode}",
            args=("--live-seconds", LIVE_SECONDS[mode]),
        )
        pair = stack.start_pair(collector, suffix=f"-{mode}")
        yield (
            mode,
            Target(
                pair.gateway_url,
                collector.tempo_url,
                collector.metrics_url,
                trace_timeout=20,
                gateway_internal_port=pair.ports.gateway_internal,
            ),
        )
    finally:
        stack.stop_all()


@pytest.mark.parametrize("name, check", scenarios.ALL, ids=[name for name, _ in scenarios.ALL])
def test_every_check_passes_and_says_how_it_checked_the_links(stand_in, name, check) -> None:
    mode, target = stand_in
    checked = check(target)
    if not isinstance(checked, CheckedTrace):
        assert checked is None  # baggage and metrics: the check asserts itself, on no trace
        return
    links = checked.match.links_by_structure
    assert links >= 2, f"{name}: only {links} cross-process links checked"
    if mode == "flushed":
        assert checked.match.links_by_flag == 0
        assert "by structure only" in str(checked)
    else:
        assert checked.match.links_by_flag == links
        assert "by structure and by span flag" in str(checked)
