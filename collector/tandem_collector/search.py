"""``/api/search``: Tempo's parameters and response shape over the in-memory store.

Response fields follow ``tempopb.SearchResponse`` as Tempo marshals it (gogo jsonpb,
zero values omitted): ``traceID`` without leading zeros, ``startTimeUnixNano`` as a
string, ``durationMs`` as a number (absent when 0), ``rootServiceName`` set to
``<root span not yet received>`` and ``rootTraceName`` absent when no root span arrived.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import json_format

from tandem_collector import traceql
from tandem_collector.ids import span_hex, tempo_trace_hex
from tandem_collector.store import Trace, TraceStore, attribute

ROOT_SPAN_NOT_YET_RECEIVED = "<root span not yet received>"
DEFAULT_LIMIT = 20
DEFAULT_SPANS_PER_SPANSET = 3
_GO_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_STATUS_NAMES = {0: "unset", 1: "ok", 2: "error"}
_KIND_NAMES = {v: k for k, v in traceql.KIND.items()}


class SearchError(ValueError):
    """A bad search parameter; answered with HTTP 400."""


@dataclass
class SearchRequest:
    tags: dict[str, str] = field(default_factory=dict)
    query: traceql.Query | None = None
    limit: int = DEFAULT_LIMIT
    start: int | None = None  # unix seconds
    end: int | None = None
    min_duration_ns: int | None = None
    max_duration_ns: int | None = None
    spans_per_spanset: int = DEFAULT_SPANS_PER_SPANSET


def parse_go_duration(text: str) -> int:
    """Nanoseconds in a Go duration such as ``100ms`` or ``1m30s`` (``0`` allowed)."""
    body = text.strip()
    sign = -1 if body.startswith("-") else 1
    body = body.lstrip("+-")
    if body == "0":
        return 0
    total, position = 0.0, 0
    for match in _GO_DURATION.finditer(body):
        if match.start() != position:
            break
        total += float(match.group(1)) * traceql.DURATION_UNITS[match.group(2)]
        position = match.end()
    if not body or position != len(body):
        raise ValueError(f"invalid duration {text!r} (use e.g. 100ms, 1.5s, 2m)")
    return sign * round(total)


def parse_logfmt(text: str) -> dict[str, str]:
    """``key=value key2="value with spaces"`` into a dict."""
    pairs: dict[str, str] = {}
    position, length = 0, len(text)
    while position < length:
        while position < length and text[position].isspace():
            position += 1
        if position >= length:
            break
        start = position
        while position < length and text[position] not in "= \t\n":
            position += 1
        key = text[start:position]
        if not key or position >= length or text[position] != "=":
            raise ValueError(f"expected key=value at {text[start:] or text!r}")
        position += 1
        if position < length and text[position] == '"':
            position += 1
            chars: list[str] = []
            while position < length and text[position] != '"':
                if text[position] == "\\" and position + 1 < length:
                    position += 1
                chars.append(text[position])
                position += 1
            if position >= length:
                raise ValueError(f"unterminated quoted value for {key!r}")
            position += 1
            value = "".join(chars)
        else:
            start = position
            while position < length and not text[position].isspace():
                position += 1
            value = text[start:position]
        pairs[key] = value
    return pairs


def _int_param(params: Mapping[str, str], name: str) -> int | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise SearchError(f"invalid {name}: {raw!r} is not an integer") from None


def parse_search_params(params: Mapping[str, str]) -> SearchRequest:
    """Validate Tempo's search parameters (the messages say what to fix)."""
    request = SearchRequest()
    q = (params.get("q") or "").strip()
    if q:
        try:
            request.query = traceql.parse(q)
        except traceql.TraceQLError as exc:
            raise SearchError(f"invalid TraceQL query: {exc}") from None
    elif params.get("tags"):
        try:
            request.tags = parse_logfmt(params["tags"])
        except ValueError as exc:
            raise SearchError(f"invalid tags: {exc}") from None
    limit = _int_param(params, "limit")
    if limit is not None:
        if limit <= 0:
            raise SearchError("invalid limit: must be a positive number")
        request.limit = limit
    spss = _int_param(params, "spss")
    if spss is not None:
        if spss <= 0:
            raise SearchError("invalid spss: must be a positive number")
        request.spans_per_spanset = spss
    request.start = _int_param(params, "start")
    request.end = _int_param(params, "end")
    if request.start is not None and request.end is not None and request.end < request.start:
        raise SearchError("invalid start/end: start must not be after end")
    for name, attr in (("minDuration", "min_duration_ns"), ("maxDuration", "max_duration_ns")):
        raw = params.get(name)
        if raw:
            try:
                setattr(request, attr, parse_go_duration(raw))
            except ValueError as exc:
                raise SearchError(f"invalid {name}: {exc}") from None
    if (
        request.min_duration_ns is not None
        and request.max_duration_ns is not None
        and request.max_duration_ns < request.min_duration_ns
    ):
        raise SearchError("invalid maxDuration: must be greater than minDuration")
    return request


def _tag_matches(trace: Trace, key: str, wanted: str) -> bool:
    """Tempo's tag search: case-insensitive substring on span or resource attributes."""
    wanted = wanted.lower()
    if key == "root.name":
        return wanted in (trace.root_name or "").lower()
    if key == "root.service.name":
        return wanted in (trace.root_service or "").lower()
    for resource, span in trace.spans():
        if key == "name":
            candidates = [span.name]
        elif key == "status.code":
            candidates = [_STATUS_NAMES.get(span.status.code, ""), str(span.status.code)]
        else:
            candidates = []
            for attrs in (span.attributes, resource.attributes):
                kv = attribute(attrs, key)
                if kv is not None:
                    value = traceql.any_value(kv.value)
                    if value is not None:
                        candidates.append(str(value))  # bools become "True": lowered below
        if any(wanted in candidate.lower() for candidate in candidates):
            return True
    return False


def _in_window(trace: Trace, request: SearchRequest) -> bool:
    if request.start is not None and trace.end_ns < request.start * 1_000_000_000:
        return False
    if request.end is not None and trace.start_ns > request.end * 1_000_000_000:
        return False
    duration = trace.duration_ns
    if request.min_duration_ns is not None and duration < request.min_duration_ns:
        return False
    if request.max_duration_ns is not None and duration > request.max_duration_ns:
        return False
    return True


def _span_json(
    span: Any, resource: Any, trace: Trace, conditions: list[traceql.Condition]
) -> dict[str, Any]:
    """A matched span as Tempo lists it, with the attributes the query referenced."""
    out: dict[str, Any] = {"spanID": span_hex(span.span_id)}
    if span.name:
        out["name"] = span.name
    out["startTimeUnixNano"] = str(span.start_time_unix_nano)
    out["durationNanos"] = str(max(0, span.end_time_unix_nano - span.start_time_unix_nano))
    attributes: list[dict[str, Any]] = []
    seen: set[str] = set()
    for condition in conditions:
        if condition.label in seen:
            continue
        if condition.scope == "intrinsic":
            if condition.name == "status":
                value: dict[str, Any] = {"stringValue": _STATUS_NAMES.get(span.status.code, "")}
            elif condition.name == "kind":
                value = {"stringValue": _KIND_NAMES.get(span.kind, "")}
            else:
                continue
        else:
            found = traceql.attribute_value(span, resource, condition.scope, condition.name)
            if found is None:
                continue
            value = json_format.MessageToDict(found)
        seen.add(condition.label)
        attributes.append({"key": condition.label, "value": value})
    if attributes:
        out["attributes"] = attributes
    return out


def _metadata(trace: Trace) -> dict[str, Any]:
    out: dict[str, Any] = {"traceID": tempo_trace_hex(trace.trace_id)}
    if trace.root_name is None:
        out["rootServiceName"] = ROOT_SPAN_NOT_YET_RECEIVED
    else:
        if trace.root_service:
            out["rootServiceName"] = trace.root_service
        if trace.root_name:
            out["rootTraceName"] = trace.root_name
    out["startTimeUnixNano"] = str(trace.start_ns)
    duration_ms = trace.duration_ns // 1_000_000
    if duration_ms:  # jsonpb omits zero values, and so does Tempo
        out["durationMs"] = duration_ms
    return out


def search(store: TraceStore, request: SearchRequest) -> dict[str, Any]:
    """Run a search; newest traces first, at most ``request.limit``."""
    results: list[tuple[int, dict[str, Any]]] = []
    inspected = 0
    for trace in store.recent():
        inspected += 1
        if not _in_window(trace, request):
            continue
        if not all(_tag_matches(trace, k, v) for k, v in request.tags.items()):
            continue
        metadata = _metadata(trace)
        if request.query is not None:
            matched = traceql.matching_spans(request.query, trace)
            if matched is None:
                continue
            conditions = [c for f in request.query.filters for c in f.conditions]
            matched.sort(key=lambda pair: pair[1].start_time_unix_nano)
            spanset = {
                "spans": [
                    _span_json(span, resource, trace, conditions)
                    for resource, span in matched[: request.spans_per_spanset]
                ],
                "matched": len(matched),
            }
            metadata["spanSet"] = spanset  # deprecated in Tempo, still sent alongside
            metadata["spanSets"] = [spanset]
        results.append((trace.start_ns, metadata))
    results.sort(key=lambda item: item[0], reverse=True)
    return {
        "traces": [metadata for _, metadata in results[: request.limit]],
        "metrics": {"inspectedTraces": inspected, "completedJobs": 1, "totalJobs": 1},
    }
