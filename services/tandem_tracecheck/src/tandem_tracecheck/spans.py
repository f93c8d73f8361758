"""Spans as Tempo returns them (OTLP JSON), normalised to one plain shape."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from typing import Any

_KINDS = {0: "UNSPECIFIED", 1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}
_STATUS = {0: "UNSET", 1: "OK", 2: "ERROR"}
# OTLP span flags: bit 8 says whether bit 9 (parent is remote) is known.
_HAS_IS_REMOTE = 0x100
_IS_REMOTE = 0x200


@dataclass(frozen=True)
class Span:
    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    kind: str
    service: str
    status: str
    start_ns: int
    end_ns: int
    attributes: dict[str, Any] = field(default_factory=dict)
    resource: dict[str, Any] = field(default_factory=dict)
    events: tuple[str, ...] = ()
    parent_is_remote: bool | None = None

    def __str__(self) -> str:
        return f"{self.service} {self.kind} {self.name!r} [{self.status}]"


def hex_id(value: str, size: int) -> str:
    """An id as lowercase hex: Tempo's JSON may carry it as hex or as base64 bytes."""
    if len(value) == size * 2 and all(c in "0123456789abcdefABCDEF" for c in value):
        return value.lower()
    try:
        return base64.b64decode(value, validate=True).hex().rjust(size * 2, "0")
    except (binascii.Error, ValueError):
        raise ValueError(f"not a {size}-byte id: {value!r}") from None


def any_value(value: dict[str, Any]) -> Any:
    """Decode an OTLP AnyValue."""
    if "stringValue" in value:
        return value["stringValue"]
    if "intValue" in value:
        return int(value["intValue"])
    if "boolValue" in value:
        return bool(value["boolValue"])
    if "doubleValue" in value:
        return float(value["doubleValue"])
    if "arrayValue" in value:
        return [any_value(v) for v in value["arrayValue"].get("values", [])]
    return None


def attributes(items: list[dict[str, Any]] | None) -> dict[str, Any]:
    return {item["key"]: any_value(item.get("value", {})) for item in items or []}


def _enum(value: Any, names: dict[int, str], prefix: str) -> str:
    if isinstance(value, int):
        return names.get(value, str(value))
    text = str(value or "")
    return text.removeprefix(prefix) or names[0]


def parse_trace(body: dict[str, Any]) -> list[Span]:
    """Spans from Tempo's `/api/v2/traces/<id>` body, `{"trace": {"resourceSpans": ...}}`.

    `{"trace": {}}`, Tempo's answer for a trace it does not hold, gives no spans. A span's
    `parent_is_remote` is None when Tempo leaves out its flags, as it does once the trace
    is flushed from its live store to a block.
    """
    spans = []
    for batch in body["trace"].get("resourceSpans") or []:
        resource = attributes(batch.get("resource", {}).get("attributes"))
        for scope in batch.get("scopeSpans") or []:
            for raw in scope.get("spans", []):
                flags = int(raw.get("flags", 0) or 0)
                parent = raw.get("parentSpanId") or None
                spans.append(
                    Span(
                        trace_id=hex_id(raw["traceId"], 16),
                        span_id=hex_id(raw["spanId"], 8),
                        parent_span_id=hex_id(parent, 8) if parent else None,
                        name=raw.get("name", ""),
                        kind=_enum(raw.get("kind"), _KINDS, "SPAN_KIND_"),
                        service=str(resource.get("service.name", "")),
                        status=_enum(
                            (raw.get("status") or {}).get("code"), _STATUS, "STATUS_CODE_"
                        ),
                        start_ns=int(raw.get("startTimeUnixNano", 0)),
                        end_ns=int(raw.get("endTimeUnixNano", 0)),
                        attributes=attributes(raw.get("attributes")),
                        resource=resource,
                        events=tuple(event.get("name", "") for event in raw.get("events", [])),
                        parent_is_remote=bool(flags & _IS_REMOTE)
                        if flags & _HAS_IS_REMOTE
                        else None,
                    )
                )
    return spans
