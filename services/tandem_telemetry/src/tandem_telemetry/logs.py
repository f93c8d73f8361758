"""JSON-lines logging that carries the current trace_id and span_id."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from opentelemetry import trace

# LogRecord's own attributes; anything else on a record came from `extra=` and is logged too.
_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON object, joined to its trace by trace_id and span_id."""

    def __init__(self, service_name: str | None = None) -> None:
        super().__init__()
        self._service_name = service_name

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if self._service_name:
            entry["service"] = self._service_name
        span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid:
            entry["trace_id"] = f"{span_context.trace_id:032x}"
            entry["span_id"] = f"{span_context.span_id:016x}"
        for key, value in vars(record).items():
            if key not in _RECORD_FIELDS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(
    level: str = "INFO", *, service_name: str | None = None, stream=None
) -> logging.Handler:
    """Send the root logger's records to stderr (or `stream`) as JSON lines.

    Replaces a handler this function added before.
    """
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter(service_name))
    handler.set_name("tandem-json")
    root = logging.getLogger()
    for existing in list(root.handlers):
        if existing.get_name() == "tandem-json":
            root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    # httpx logs every request at INFO, URL and query included: a line per
    # request on the hot path, and a way for secrets in URLs to reach the logs.
    # The CLIENT spans already record each request, without the query.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    return handler
