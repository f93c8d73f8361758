"""Trace and span id conversions, following Tempo's own rules.

Tempo parses a trace id as hex of at most 32 digits, left-padding shorter ones with zeros,
and prints trace ids in search results *without* leading zeros (``TraceIDToHexString``);
span ids are printed as 16 hex digits.
"""

from __future__ import annotations

import string

TRACE_ID_BYTES = 16
SPAN_ID_BYTES = 8
_HEX = frozenset(string.hexdigits)


def parse_trace_id(text: str) -> bytes:
    """Parse a hex trace id the way Tempo does; raise ``ValueError`` with a clear message."""
    if not text:
        raise ValueError("trace ID is empty")
    for position, char in enumerate(text, start=1):
        if char not in _HEX:
            raise ValueError(
                f"trace IDs can only contain hex characters: invalid character {char!r} "
                f"at position {position}"
            )
    if len(text) % 2:
        text = "0" + text
    raw = bytes.fromhex(text)
    if len(raw) > TRACE_ID_BYTES:
        raise ValueError("trace IDs can't be larger than 128 bits")
    return raw.rjust(TRACE_ID_BYTES, b"\0")


def tempo_trace_hex(trace_id: bytes) -> str:
    """Hex as Tempo's search API prints it: lower case, leading zeros removed."""
    return trace_id.hex().lstrip("0")


def span_hex(span_id: bytes) -> str:
    """Hex as Tempo's search API prints span ids: 16 digits, zero padded."""
    return span_id.hex().lstrip("0").rjust(2 * SPAN_ID_BYTES, "0")
