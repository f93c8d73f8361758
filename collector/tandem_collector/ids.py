"""Trace ids in URLs, parsed by Tempo's own rules.

Tempo takes a trace id as hex of at most 32 digits, left-padding shorter ones with zeros,
and rejects anything else with these messages.
"""

from __future__ import annotations

import string

TRACE_ID_BYTES = 16
_HEX = frozenset(string.hexdigits)


def parse_trace_id(text: str) -> bytes:
    """Parse a hex trace id the way Tempo does; raise ``ValueError`` with Tempo's message."""
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
