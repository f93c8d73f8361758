"""A small TraceQL subset: spanset filters of comparisons joined by ``&&``.

Supported::

    { resource.service.name = "gateway" && span.http.route = "/api/work" }
    { name = "GET /api/work" } && { .http.response.status_code >= 500 }
    { status = error }   { kind = server }   { duration > 100ms }   { }

Fields: ``span.X``, ``resource.X``, unscoped ``.X`` (span, then resource), and the
intrinsics ``name``, ``status``, ``statusMessage``, ``kind``, ``duration``, ``rootName``,
``rootServiceName``, ``traceDuration`` (and their ``span:``/``trace:`` spellings, plus
``span:id``, ``span:parentID``, ``trace:id``). Operators: ``= != > >= < <= =~ !~``
(regular expressions are fully anchored, as in Tempo). Anything else (``||``, pipelines,
structural operators, aggregates) is refused with :class:`TraceQLError`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tandem_collector.store import Trace, attribute


class TraceQLError(ValueError):
    """The query is not valid TraceQL, or uses more than this subset supports."""


@dataclass(frozen=True)
class Duration:
    nanos: int


@dataclass(frozen=True)
class Enum:
    """A status (``error``/``ok``/``unset``) or kind (``server``…) keyword."""

    group: str
    code: int


STATUS = {"unset": 0, "ok": 1, "error": 2}
KIND = {"unspecified": 0, "internal": 1, "server": 2, "client": 3, "producer": 4, "consumer": 5}
DURATION_UNITS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "μs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
_INTRINSICS = {
    "name": "name",
    "span:name": "name",
    "status": "status",
    "span:status": "status",
    "statusMessage": "statusMessage",
    "span:statusMessage": "statusMessage",
    "kind": "kind",
    "span:kind": "kind",
    "duration": "duration",
    "span:duration": "duration",
    "span:id": "spanId",
    "span:parentID": "parentId",
    "trace:id": "traceId",
    "rootName": "rootName",
    "trace:rootName": "rootName",
    "rootServiceName": "rootServiceName",
    "trace:rootService": "rootServiceName",
    "traceDuration": "traceDuration",
    "trace:duration": "traceDuration",
}
_OPERATORS = ("=~", "!~", "!=", ">=", "<=", "=", ">", "<")
_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<string>"(?:[^"\\]|\\.)*"|`[^`]*`)
  | (?P<number>-?\d+(?:\.\d+)?(?:ns|us|µs|μs|ms|s|m|h)?(?![\w.]))
  | (?P<op>=~|!~|!=|>=|<=|&&|\|\||>>|<<|!<<|!>>|[=<>{}()|!~])
  | (?P<ident>[A-Za-z_.:][A-Za-z0-9_.:/\-]*)
    """,
    re.VERBOSE,
)


@dataclass(frozen=True)
class Token:
    kind: str
    text: str
    column: int


def tokenize(query: str) -> list[Token]:
    tokens: list[Token] = []
    position = 0
    while position < len(query):
        match = _TOKEN.match(query, position)
        if match is None:
            raise TraceQLError(f"unexpected character {query[position]!r} at column {position + 1}")
        kind = match.lastgroup or ""
        if kind != "ws":
            tokens.append(Token(kind, match.group(), position + 1))
        position = match.end()
    return tokens


@dataclass(frozen=True)
class Condition:
    """``field op value``; ``scope`` is ``span``, ``resource``, ``any`` or ``intrinsic``."""

    scope: str
    name: str
    op: str
    value: Any

    @property
    def label(self) -> str:
        """Attribute key as Tempo reports it in search results (scope removed)."""
        return self.name


@dataclass(frozen=True)
class SpansetFilter:
    conditions: tuple[Condition, ...]


@dataclass(frozen=True)
class Query:
    """Spanset filters that must all match some span of a trace."""

    filters: tuple[SpansetFilter, ...]


def parse(query: str) -> Query:
    """Parse the supported subset, or raise :class:`TraceQLError` saying what is wrong."""
    tokens = tokenize(query)
    if not tokens:
        return Query((SpansetFilter(()),))
    parser = _Parser(tokens, query)
    return parser.query()


class _Parser:
    def __init__(self, tokens: list[Token], source: str) -> None:
        self.tokens = tokens
        self.source = source
        self.index = 0

    def peek(self) -> Token | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def take(self) -> Token:
        token = self.peek()
        if token is None:
            raise TraceQLError(f"unexpected end of query {self.source!r}")
        self.index += 1
        return token

    def expect(self, text: str) -> Token:
        token = self.take()
        if token.text != text:
            raise self.unsupported(token, f"expected {text!r}")
        return token

    @staticmethod
    def unsupported(token: Token, why: str) -> TraceQLError:
        return TraceQLError(
            f"{why} but found {token.text!r} at column {token.column}; this collector "
            "supports only spanset filters such as "
            '{ resource.service.name = "gateway" && span.http.route = "/api/work" }, '
            "joined by &&"
        )

    def query(self) -> Query:
        filters = [self.spanset()]
        while (token := self.peek()) is not None:
            if token.text != "&&":
                raise self.unsupported(token, "expected && between spansets")
            self.take()
            filters.append(self.spanset())
        return Query(tuple(filters))

    def spanset(self) -> SpansetFilter:
        self.expect("{")
        conditions: list[Condition] = []
        token = self.peek()
        if token is not None and token.text == "}":
            self.take()
            return SpansetFilter(())
        if token is not None and token.text == "true":
            self.take()
        else:
            conditions.append(self.condition())
        while (token := self.take()).text != "}":
            if token.text != "&&":
                raise self.unsupported(token, "expected && or }")
            conditions.append(self.condition())
        return SpansetFilter(tuple(conditions))

    def condition(self) -> Condition:
        token = self.take()
        if token.kind != "ident":
            raise self.unsupported(token, "expected a field name")
        scope, name = _field(token)
        op = self.take()
        if op.text not in _OPERATORS:
            raise self.unsupported(op, "expected a comparison operator")
        value = _literal(self.take(), scope, name)
        if op.text in ("=~", "!~"):
            if not isinstance(value, str):
                raise TraceQLError(f"{op.text} needs a string pattern at column {op.column}")
            try:
                value = re.compile(value)
            except re.error as exc:
                raise TraceQLError(f"invalid regular expression {value!r}: {exc}") from None
        return Condition(scope, name, op.text, value)


def _field(token: Token) -> tuple[str, str]:
    text = token.text
    if text in _INTRINSICS:
        return "intrinsic", _INTRINSICS[text]
    for prefix, scope in (("span.", "span"), ("resource.", "resource"), (".", "any")):
        if text.startswith(prefix) and len(text) > len(prefix):
            return scope, text[len(prefix) :]
    raise TraceQLError(
        f"unknown field {text!r} at column {token.column}: use span.<attr>, "
        "resource.<attr>, .<attr> or an intrinsic such as name, status, kind, duration"
    )


def _literal(token: Token, scope: str, name: str) -> Any:
    text = token.text
    if token.kind == "string":
        if text.startswith("`"):
            return text[1:-1]
        return re.sub(
            r"\\(.)", lambda m: {"n": "\n", "t": "\t"}.get(m.group(1), m.group(1)), text[1:-1]
        )
    if token.kind == "number":
        unit_match = re.search(r"(ns|us|µs|μs|ms|s|m|h)$", text)
        if unit_match:
            number = float(text[: unit_match.start()])
            return Duration(round(number * DURATION_UNITS[unit_match.group(1)]))
        return float(text) if "." in text else int(text)
    if token.kind == "ident":
        if text in ("true", "false"):
            return text == "true"
        if scope == "intrinsic" and name == "status" and text in STATUS:
            return Enum("status", STATUS[text])
        if scope == "intrinsic" and name == "kind" and text in KIND:
            return Enum("kind", KIND[text])
    raise TraceQLError(f"expected a value but found {text!r} at column {token.column}")


# ---------------------------------------------------------------- evaluation


def any_value(value: AnyValue) -> Any:
    """Comparable Python value of an attribute (None for arrays, maps, bytes)."""
    kind = value.WhichOneof("value")
    if kind in ("string_value", "bool_value", "int_value", "double_value"):
        return getattr(value, kind)
    return None


def attribute_value(span: Span, resource: Resource, scope: str, name: str) -> AnyValue | None:
    """The attribute a scoped field names (``any`` looks at the span, then the resource)."""
    if scope in ("span", "any"):
        kv = attribute(span.attributes, name)
        if kv is not None:
            return kv.value
    if scope in ("resource", "any"):
        kv = attribute(resource.attributes, name)
        if kv is not None:
            return kv.value
    return None


def _intrinsic(condition: Condition, span: Span, trace: Trace) -> Any:
    name = condition.name
    if name == "name":
        return span.name
    if name == "status":
        return Enum("status", span.status.code)
    if name == "statusMessage":
        return span.status.message
    if name == "kind":
        return Enum("kind", span.kind)
    if name == "duration":
        return Duration(span.end_time_unix_nano - span.start_time_unix_nano)
    if name == "spanId":
        return span.span_id.hex()
    if name == "parentId":
        return span.parent_span_id.hex()
    if name == "traceId":
        return span.trace_id.hex()
    if name == "rootName":
        return trace.root_name
    if name == "rootServiceName":
        return trace.root_service
    if name == "traceDuration":
        return Duration(trace.duration_ns)
    return None


def _compare(actual: Any, op: str, expected: Any) -> bool:
    if actual is None:
        return False
    if op in ("=~", "!~"):
        if not isinstance(actual, str):
            return False
        return (expected.fullmatch(actual) is not None) == (op == "=~")
    if isinstance(expected, bool) or isinstance(actual, bool):
        if not (isinstance(expected, bool) and isinstance(actual, bool)):
            return False
    elif isinstance(expected, (int, float)) != isinstance(actual, (int, float)) or (type(expected) in (Duration, Enum) and type(actual) is not type(expected)):
        return False
    if isinstance(expected, Duration):
        actual, expected = actual.nanos, expected.nanos
    elif isinstance(expected, Enum):
        if actual.group != expected.group or op not in ("=", "!="):
            return False
        actual, expected = actual.code, expected.code
    elif isinstance(expected, str) and not isinstance(actual, str):
        return False
    compare: dict[str, Callable[[Any, Any], bool]] = {
        "=": lambda a, b: a == b,
        "!=": lambda a, b: a != b,
        ">": lambda a, b: a > b,
        ">=": lambda a, b: a >= b,
        "<": lambda a, b: a < b,
        "<=": lambda a, b: a <= b,
    }
    try:
        return compare[op](actual, expected)
    except TypeError:
        return False


def condition_value(condition: Condition, span: Span, resource: Resource, trace: Trace) -> Any:
    """The span's value for a condition's field (None when absent)."""
    if condition.scope == "intrinsic":
        return _intrinsic(condition, span, trace)
    value = attribute_value(span, resource, condition.scope, condition.name)
    return None if value is None else any_value(value)


def span_matches(spanset: SpansetFilter, span: Span, resource: Resource, trace: Trace) -> bool:
    """True when every condition of the spanset holds for this span."""
    for condition in spanset.conditions:
        expected = condition.value
        actual = condition_value(condition, span, resource, trace)
        if isinstance(expected, str) and condition.name in ("traceId", "spanId", "parentId"):
            expected = expected.lower()
        if not _compare(actual, condition.op, expected):
            return False
    return True


def matching_spans(query: Query, trace: Trace) -> list[tuple[Resource, Span]] | None:
    """Spans matched by any filter, or None when some filter matches no span."""
    matched: dict[int, tuple[Resource, Span]] = {}
    spans = list(trace.spans())
    for spanset in query.filters:
        found = False
        for resource, span in spans:
            if span_matches(spanset, span, resource, trace):
                found = True
                matched.setdefault(id(span), (resource, span))
        if not found:
            return None
    return list(matched.values())
