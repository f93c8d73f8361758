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
        self.release = asyncio.Event()
        self._entering = asyncio.Condition()

    async def hold(self) -> None:
        async with self._entering:
            self.entered += 1
            self._entering.notify_all()
        await self.release.wait()

    async def wait_entered(self, count: int) -> None:
        async with self._entering:
            await asyncio.wait_for(
                self._entering.wait_for(lambda: self.entered >= count), HANG_GUARD
            )

    async def wait_all_in(self) -> None:
        await self.wait_entered(self.expected)


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
