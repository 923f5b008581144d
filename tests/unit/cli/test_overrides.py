"""`--set KEY=VALUE`: values typed as a person means them, and bad items rejected with a usage error."""

from __future__ import annotations

import math

import pytest
import typer

from cli.overrides import hyperparameters, parse_assignment, parse_assignments, parse_value


@pytest.mark.parametrize(("text", "expected"), [
    ("500", 500), ("-3", -3), ("+7", 7), ("1_000", 1000), ("0", 0),
    ("3e-4", 3e-4), ("0.1", 0.1), ("-2.5", -2.5), ("1E3", 1000.0),
    ("true", True), ("True", True), ("yes", True), ("on", True),
    ("false", False), ("FALSE", False), ("no", False), ("off", False),
    ("none", None), ("null", None),
    ("learned", "learned"), ("relu2", "relu2"), ("0x10", "0x10"), (" cosine ", "cosine"),
])
def test_values_are_typed_as_written(text, expected):
    value = parse_value(text)
    assert value == expected and type(value) is type(expected)


def test_an_integer_stays_an_integer_and_a_float_a_float():
    assert isinstance(parse_value("64"), int)
    assert isinstance(parse_value("64.0"), float)
    assert math.isnan(parse_value("nan"))  # parsed; the gateway rejects it and names the key


def test_assignment_splits_at_the_first_equals_sign():
    assert parse_assignment("stop=a=b") == ("stop", "a=b")
    assert parse_assignment(" max_iters = 20 ") == ("max_iters", 20)


@pytest.mark.parametrize("item", ["max_iters", "=3", "max_iters=", "max_iters=  ", ""])
def test_items_without_a_key_or_a_value_are_usage_errors(item):
    with pytest.raises(typer.BadParameter):
        parse_assignment(item)


def test_later_assignments_win():
    assert parse_assignments(["lr=1", "lr=2", "dropout=0.1"]) == {"lr": 2, "dropout": 0.1}


def test_preset_and_max_iters_flags_go_on_top_of_set():
    hp = hyperparameters(["max_iters=10", "MAX_ITERS=10", "d_model=64"], preset="tiny", max_iters=30)
    assert hp == {"max_iters": 30, "d_model": 64, "preset": "tiny"}  # no second spelling left to conflict
    assert hyperparameters([]) == {}
    assert hyperparameters(["preset=classic"], preset=None) == {"preset": "classic"}
