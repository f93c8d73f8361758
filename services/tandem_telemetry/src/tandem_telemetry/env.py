"""Read settings from environment variables: the one parser Tandem's packages and services use.

Unset or blank means the default. A value that cannot be used raises
InvalidEnvVar naming the variable, the value and what it accepts: a
misconfigured process refuses to start rather than run on a silent default.
"""

from __future__ import annotations

import math
import os


class InvalidEnvVar(ValueError):
    """An environment variable holds a value its reader cannot use."""


def _raw(name: str) -> str:
    return os.environ.get(name, "").strip()


def env_str(name: str, default: str) -> str:
    """A string; surrounding whitespace is dropped."""
    return _raw(name) or default


def env_list(name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    """A comma-separated variable; unset means the default, set but empty means none."""
    raw = os.environ.get(name)
    if raw is None:
        return default
    return tuple(item.strip() for item in raw.split(",") if item.strip())


def env_flag(name: str, default: bool = False) -> bool:
    """A boolean: true/false (also 1/0, yes/no, on/off), any case."""
    raw = _raw(name).lower()
    if not raw:
        return default
    if raw in ("true", "1", "yes", "on"):
        return True
    if raw in ("false", "0", "no", "off"):
        return False
    raise InvalidEnvVar(f"{name}={raw!r} is not a boolean; use true or false")


def env_choice(name: str, choices: tuple[str, ...]) -> str:
    """One of `choices` (given in lower case), any case; unset means the first."""
    raw = _raw(name).lower()
    if not raw:
        return choices[0]
    if raw not in choices:
        raise InvalidEnvVar(f"{name}={raw!r}: use one of {', '.join(choices)}")
    return raw


def env_int(name: str, default: int, *, minimum: int = 1, maximum: int | None = None) -> int:
    """A whole number from `minimum` to `maximum` (if given), in ASCII digits."""
    raw = _raw(name)
    if not raw:
        return default
    # isdigit() alone would also take "²"; int() would also take "1_0" and " -1".
    value = int(raw) if raw.isascii() and raw.isdigit() else None
    if value is None or value < minimum or (maximum is not None and value > maximum):
        accepted = f"of at least {minimum}" if maximum is None else f"from {minimum} to {maximum}"
        raise InvalidEnvVar(f"{name}={raw!r} must be a whole number {accepted}")
    return value


def env_float(name: str, default: float) -> float:
    """A finite number greater than 0, e.g. a timeout in seconds."""
    raw = _raw(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise InvalidEnvVar(f"{name}={raw!r} is not a number") from None
    if not (math.isfinite(value) and value > 0):
        raise InvalidEnvVar(f"{name}={raw!r} must be a finite number greater than 0")
    return value
