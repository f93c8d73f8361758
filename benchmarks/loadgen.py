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
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

WRK_SCRIPT = Path(__file__).with_name("wrk_report.lua")
_MARKER = "WRK_JSON "
# The overload section's script: latencies by outcome (ok, shed, other).
WRK_OUTCOMES_SCRIPT = Path(__file__).with_name("wrk_overload.lua")
_OUTCOMES_MARKER = "WRK_OVERLOAD_JSON "
OUTCOMES = ("ok", "shed", "other")


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


def choose_generator(requested: str, command: str) -> str:
    """The load generator to use: `requested`, with "auto" taking wrk when it is installed.

    Raises SystemExit(2), with a line naming `command`, when wrk is asked for but missing.
    """
    generator = requested
    if generator == "auto":
        generator = "wrk" if wrk_path() else "python"
    if generator == "wrk" and not wrk_path():
        print(f"{command}: wrk is not installed (apt-get install -y wrk)", file=sys.stderr)
        raise SystemExit(2)
    return generator


def _wrk_summary(
    script: Path,
    marker: str,
    url: str,
    seconds: float,
    *,
    threads: int,
    connections: int,
    timeout: float,
    slack: float,
) -> dict[str, Any]:
    """Run wrk with `script` for `seconds` (rounded up to whole seconds); return the JSON the
    script prints after `marker`. `slack`: seconds beyond the run and its timeout before the
    run is given up."""
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
        str(script),
        url,
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=duration + timeout + slack, check=False
    )
    for line in done.stdout.splitlines():
        if line.startswith(marker):
            summary: dict[str, Any] = json.loads(line[len(marker) :])
            return summary
    raise RuntimeError(
        f"wrk printed no summary (exit {done.returncode}):\n{done.stdout}\n{done.stderr}"
    )


def run_wrk(
    url: str, seconds: float, *, threads: int, connections: int, timeout: float = 10.0
) -> LoadResult:
    """Run wrk for `seconds` (rounded up to whole seconds) and return its summary."""
    data = _wrk_summary(
        WRK_SCRIPT,
        _MARKER,
        url,
        seconds,
        threads=threads,
        connections=connections,
        timeout=timeout,
        slack=30,
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
    """The stand-in, summarised as wrk_report.lua does: a non-2xx/3xx answer is an error."""
    answers, socket_errors, elapsed = asyncio.run(
        _python_answers(url, seconds, connections, timeout)
    )
    ok = sorted(ms for status, _, ms in answers if status < 400)
    errors = socket_errors + len(answers) - len(ok)
    return LoadResult(len(ok), elapsed, errors, _at(ok, 50), _at(ok, 90), _at(ok, 99), "python")


def run_load(
    url: str, seconds: float, *, generator: str, threads: int, connections: int
) -> LoadResult:
    if generator == "wrk":
        return run_wrk(url, seconds, threads=threads, connections=connections)
    return run_python(url, seconds, connections=connections)


@dataclass(frozen=True)
class Latencies:
    """One outcome's count and latency percentiles, in ms."""

    count: int = 0
    p50_ms: float = 0.0
    p90_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0


@dataclass(frozen=True)
class OutcomeResult:
    """A closed-loop measurement split by outcome: ok (2xx), shed (503 with Retry-After), other.

    `socket_errors` are connect/read/write errors and client timeouts: requests with no answer.
    """

    seconds: float
    ok: Latencies
    shed: Latencies
    other: Latencies
    statuses: dict[str, int]
    socket_errors: int
    generator: str

    @property
    def goodput(self) -> float:
        return self.ok.count / self.seconds if self.seconds else 0.0

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "goodput": self.goodput}


def run_wrk_outcomes(
    url: str, seconds: float, *, connections: int, timeout: float = 10.0
) -> OutcomeResult:
    """wrk with wrk_overload.lua: each response matched to its request by its trace id."""
    data = _wrk_summary(
        WRK_OUTCOMES_SCRIPT,
        _OUTCOMES_MARKER,
        url,
        seconds,
        threads=1,
        connections=connections,
        timeout=timeout,
        slack=60,
    )
    if data["unmatched"]:
        raise RuntimeError(f"{data['unmatched']} responses carried no traceresponse of a request")

    def latencies(raw: dict[str, int]) -> Latencies:
        return Latencies(
            raw["count"], raw["p50"] / 1000, raw["p90"] / 1000, raw["p99"] / 1000, raw["max"] / 1000
        )

    return OutcomeResult(
        seconds=data["duration_us"] / 1e6,
        ok=latencies(data["ok"]),
        shed=latencies(data["shed"]),
        other=latencies(data["other"]),
        statuses=data["statuses"],
        socket_errors=sum(data["errors"].values()),
        generator="wrk",
    )


def run_python_outcomes(
    url: str, seconds: float, *, connections: int, timeout: float = 10.0
) -> OutcomeResult:
    """The stand-in, split by outcome as wrk_overload.lua does."""
    answers, socket_errors, elapsed = asyncio.run(
        _python_answers(url, seconds, connections, timeout)
    )
    by_outcome: dict[str, list[float]] = {outcome: [] for outcome in OUTCOMES}
    statuses: dict[str, int] = {}
    for status, retry_after, ms in answers:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
        outcome = (
            "ok" if 200 <= status < 300 else "shed" if status == 503 and retry_after else "other"
        )
        by_outcome[outcome].append(ms)

    def latencies(values: list[float]) -> Latencies:
        values.sort()
        if not values:
            return Latencies()
        return Latencies(len(values), _at(values, 50), _at(values, 90), _at(values, 99), values[-1])

    return OutcomeResult(
        elapsed,
        latencies(by_outcome["ok"]),
        latencies(by_outcome["shed"]),
        latencies(by_outcome["other"]),
        statuses,
        socket_errors,
        "python",
    )


def _at(sorted_ms: list[float], p: float) -> float:
    """The `p`th percentile of sorted values (nearest rank)."""
    if not sorted_ms:
        return 0.0
    return sorted_ms[min(len(sorted_ms) - 1, max(0, math.ceil(p / 100 * len(sorted_ms)) - 1))]


async def _python_answers(
    url: str, seconds: float, connections: int, timeout: float
) -> tuple[list[tuple[int, bool, float]], int, float]:
    """The stand-in load generator for machines without wrk: `connections` aiohttp loops, each
    one GET at a time, for `seconds`. Returns each answer (status, whether it carried
    Retry-After, ms), the requests that got no answer, and the seconds taken."""
    import aiohttp

    answers: list[tuple[int, bool, float]] = []
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
                except (TimeoutError, aiohttp.ClientError):
                    errors += 1
                    continue
                ms = (time.perf_counter() - began) * 1000
                answers.append((response.status, "retry-after" in response.headers, ms))

        await asyncio.gather(*(loop() for _ in range(connections)))
        elapsed = time.perf_counter() - start
    return answers, errors, elapsed


def run_outcomes(url: str, seconds: float, *, generator: str, connections: int) -> OutcomeResult:
    if generator == "wrk":
        return run_wrk_outcomes(url, seconds, connections=connections)
    return run_python_outcomes(url, seconds, connections=connections)
