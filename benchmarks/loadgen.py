"""Closed-loop HTTP load: wrk (the load generator of record), or a small aiohttp stand-in.

`make bench` always uses wrk. The stand-in exists so that the smoke test in
`make test` exercises the whole harness on machines without wrk; its figures
are never written to docs/.
"""

from __future__ import annotations

import asyncio
import json
import math
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

WRK_SCRIPT = Path(__file__).with_name("wrk_report.lua")
_MARKER = "WRK_JSON "


@dataclass(frozen=True)
class LoadResult:
    """One measurement: completed requests over a wall-clock window, with latency percentiles."""

    requests: int
    seconds: float
    errors: int  # connect/read/write/timeout errors and non-2xx/3xx answers
    p50_ms: float
    p90_ms: float
    p99_ms: float
    generator: str

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "rps": self.rps}


def wrk_path() -> str | None:
    return shutil.which("wrk")


def run_wrk(
    url: str, seconds: float, *, threads: int, connections: int, timeout: float = 10.0
) -> LoadResult:
    """Run wrk for `seconds` (rounded up to whole seconds) and return its summary."""
    wrk = wrk_path()
    if wrk is None:
        raise RuntimeError("wrk is not installed (make bench installs it with apt-get)")
    duration = max(1, math.ceil(seconds))
    command = [
        wrk,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration}s",
        f"--timeout={int(timeout)}s",
        "-s",
        str(WRK_SCRIPT),
        url,
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=duration + timeout + 30, check=False
    )
    for line in done.stdout.splitlines():
        if line.startswith(_MARKER):
            data = json.loads(line[len(_MARKER) :])
            break
    else:
        raise RuntimeError(
            f"wrk printed no summary (exit {done.returncode}):\n{done.stdout}\n{done.stderr}"
        )
    latency = data["latency_us"]
    return LoadResult(
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        errors=sum(data["errors"].values()),
        p50_ms=latency["p50"] / 1000,
        p90_ms=latency["p90"] / 1000,
        p99_ms=latency["p99"] / 1000,
        generator="wrk",
    )


def run_python(url: str, seconds: float, *, connections: int, timeout: float = 10.0) -> LoadResult:
    """The stand-in: `connections` aiohttp loops, each one request at a time, for `seconds`."""
    return asyncio.run(_python_load(url, seconds, connections, timeout))


async def _python_load(url: str, seconds: float, connections: int, timeout: float) -> LoadResult:
    import aiohttp

    latencies: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=timeout)
    ) as session:
        start = time.perf_counter()
        deadline = start + seconds

        async def loop() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                began = time.perf_counter()
                try:
                    async with session.get(url) as response:
                        await response.read()
                        ok = response.status < 400
                except (TimeoutError, aiohttp.ClientError):
                    ok = False
                if ok:
                    latencies.append(time.perf_counter() - began)
                else:
                    errors += 1

        await asyncio.gather(*(loop() for _ in range(connections)))
        elapsed = time.perf_counter() - start
    latencies.sort()

    def percentile(p: float) -> float:
        if not latencies:
            return 0.0
        return latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] * 1000

    return LoadResult(
        len(latencies), elapsed, errors, percentile(50), percentile(90), percentile(99), "python"
    )


def run_load(
    url: str, seconds: float, *, generator: str, threads: int, connections: int
) -> LoadResult:
    if generator == "wrk":
        return run_wrk(url, seconds, threads=threads, connections=connections)
    return run_python(url, seconds, connections=connections)
