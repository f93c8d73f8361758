"""The linked span tree across gateway and worker, asserted through the Tempo API."""

from __future__ import annotations

import pytest

from tandem_tracecheck import scenarios
from tandem_tracecheck.scenarios import Target


@pytest.mark.parametrize("tasks", [1, 3])
def test_caller_trace_yields_the_exact_linked_tree(target: Target, tasks: int) -> None:
    scenarios.linked_tree(target, tasks)


def test_request_without_traceparent_starts_the_trace_it_reports(target: Target) -> None:
    scenarios.new_trace_without_traceparent(target)


def test_worker_failure_is_an_error_chain(target: Target) -> None:
    scenarios.worker_failure_is_an_error_chain(target)


def test_baggage_reaches_the_worker(target: Target) -> None:
    scenarios.baggage_reaches_the_worker(target)


def test_request_duration_metrics_arrive_for_both_services(target: Target) -> None:
    scenarios.request_duration_metrics(target)


def test_every_shared_check_is_run_here() -> None:
    """The CLI (helm test, make e2e) runs scenarios.ALL; this module must cover the same list."""
    covered = {
        "linked_tree",
        "new_trace_without_traceparent",
        "worker_failure_is_an_error_chain",
        "baggage_reaches_the_worker",
        "request_duration_metrics",
    }
    names = {getattr(check, "__name__", "") for _, check in scenarios.ALL} - {"<lambda>"}
    assert names <= covered, f"checks run by the CLI but not by pytest: {names - covered}"
