"""Helpers for the admission tests: handlers held on events, and the shed counter's points."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.support import Pipeline

# A guard against a hang, never a synchronisation: every wait below is on an event.
HANG_GUARD = 30.0


class Gate:
    """A handler's requests enter, say so, and wait until the test lets them go."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.entered = 0
        self.all_in = asyncio.Event()
        self.release = asyncio.Event()

    async def hold(self) -> None:
        self.entered += 1
        if self.entered == self.expected:
            self.all_in.set()
        await self.release.wait()

    async def wait_all_in(self) -> None:
        await asyncio.wait_for(self.all_in.wait(), HANG_GUARD)


def metric_points(pipeline: Pipeline, name: str) -> list[Any]:
    """The data points of the metric `name` the pipeline has recorded so far (none: [])."""
    data = pipeline.metrics.get_metrics_data()
    if data is None:
        return []
    return [
        point
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
        if metric.name == name
        for point in metric.data.data_points
    ]
