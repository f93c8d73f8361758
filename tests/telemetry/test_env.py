"""tandem_telemetry.env: the one environment-variable parser, for the packages and the services."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tandem_telemetry.env import (
    InvalidEnvVar,
    env_choice,
    env_flag,
    env_float,
    env_int,
    env_list,
    env_str,
)

NAME = "TANDEM_TEST_SETTING"


@pytest.fixture(autouse=True)
def _unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(NAME, raising=False)


@pytest.mark.parametrize("raw", [None, "", "   "])
def test_unset_or_blank_means_the_default(monkeypatch: pytest.MonkeyPatch, raw: str | None) -> None:
    if raw is not None:
        monkeypatch.setenv(NAME, raw)
    assert env_str(NAME, "d") == "d"
    assert env_flag(NAME, True) is True
    assert env_choice(NAME, ("first", "second")) == "first"
    assert env_int(NAME, 7) == 7
    assert env_float(NAME, 2.5) == 2.5


@pytest.mark.parametrize(
    ("raw", "read", "value"),
    [
        (" host ", lambda: env_str(NAME, "d"), "host"),
        ("Yes", lambda: env_flag(NAME), True),
        ("off", lambda: env_flag(NAME, True), False),
        ("SECOND", lambda: env_choice(NAME, ("first", "second")), "second"),
        ("0", lambda: env_int(NAME, 7, minimum=0), 0),
        ("65535", lambda: env_int(NAME, 7, maximum=65535), 65535),
        ("0.25", lambda: env_float(NAME, 1.0), 0.25),
        ("a, ,b", lambda: env_list(NAME, ("d",)), ("a", "b")),
        ("", lambda: env_list(NAME, ("d",)), ()),
    ],
)
def test_good_values_are_read(
    monkeypatch: pytest.MonkeyPatch, raw: str, read: Callable[[], object], value: object
) -> None:
    monkeypatch.setenv(NAME, raw)
    assert read() == value


@pytest.mark.parametrize(
    ("raw", "read", "message"),
    [
        ("maybe", lambda: env_flag(NAME), " is not a boolean; use true or false"),
        ("third", lambda: env_choice(NAME, ("first", "second")), ": use one of first, second"),
        ("http", lambda: env_int(NAME, 1), " must be a whole number of at least 1"),
        ("²", lambda: env_int(NAME, 1), " must be a whole number of at least 1"),
        ("1_0", lambda: env_int(NAME, 1), " must be a whole number of at least 1"),
        ("-1", lambda: env_int(NAME, 1, minimum=0), " must be a whole number of at least 0"),
        ("0", lambda: env_int(NAME, 1, maximum=9), " must be a whole number from 1 to 9"),
        ("10", lambda: env_int(NAME, 1, maximum=9), " must be a whole number from 1 to 9"),
        ("soon", lambda: env_float(NAME, 1.0), " is not a number"),
        ("0", lambda: env_float(NAME, 1.0), " must be a finite number greater than 0"),
        ("-2", lambda: env_float(NAME, 1.0), " must be a finite number greater than 0"),
        ("nan", lambda: env_float(NAME, 1.0), " must be a finite number greater than 0"),
        ("inf", lambda: env_float(NAME, 1.0), " must be a finite number greater than 0"),
    ],
)
def test_a_bad_value_is_an_error_naming_the_variable_the_value_and_what_it_accepts(
    monkeypatch: pytest.MonkeyPatch, raw: str, read: Callable[[], object], message: str
) -> None:
    monkeypatch.setenv(NAME, raw)
    with pytest.raises(InvalidEnvVar) as caught:
        read()
    assert str(caught.value) == f"{NAME}={raw!r}{message}"
    assert isinstance(caught.value, ValueError)
