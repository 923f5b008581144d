"""Plain or Rich output, and how values read in tables."""

from __future__ import annotations

import io

import pytest

from cli.render import Output, cell, duration, number, plain_table, use_rich, when


@pytest.mark.parametrize(("terminal", "env", "expected"), [
    (True, {"TERM": "xterm-256color"}, True),
    (False, {"TERM": "xterm-256color"}, False),  # a pipe or a file
    (True, {"TERM": "dumb"}, False),  # an editor's shell
    (True, {"TERM": "xterm", "LFZ_PLAIN": "1"}, False),
    (True, {"TERM": "xterm", "LFZ_PLAIN": "0"}, True),
    (True, {}, True),
])
def test_rich_only_on_a_real_terminal(terminal, env, expected):
    assert use_rich(terminal, env) is expected


def test_output_to_a_pipe_is_plain_text():
    stdout, stderr = io.StringIO(), io.StringIO()
    out = Output(stdout=stdout, stderr=stderr, env={"TERM": "xterm"})
    assert not out.rich and not out.rich_err
    out.table(["id", "loss"], [["a", 1.23456], ["bb", None]], right=["loss"])
    out.fields([("name", "m"), ("parameters", 12345)])
    out.note("a note")
    out.error("it broke")
    assert stdout.getvalue() == ("ID   LOSS\n"
                                 "a   1.235\n"
                                 "bb      -\n"
                                 "name:       m\n"
                                 "parameters: 12345\n")
    assert stderr.getvalue() == "a note\nerror: it broke\n"
    assert "\x1b[" not in stdout.getvalue() + stderr.getvalue()


def test_forced_rich_output_draws_a_table():
    stdout = io.StringIO()
    out = Output(rich=True, stdout=stdout, stderr=io.StringIO())
    out.table(["id", "name"], [["1", "[bold]not markup[/bold]"]])
    text = stdout.getvalue()
    assert "┃" in text or "│" in text
    assert "[bold]not markup[/bold]" in text  # user data is escaped, never interpreted


def test_json_and_raw_are_written_as_is():
    stdout = io.StringIO()
    out = Output(rich=True, stdout=stdout, stderr=io.StringIO())
    out.json({"b": [1, 2], "a": "é"})
    out.json_line({"x": 1})
    out.raw("tok")
    assert stdout.getvalue() == '{\n  "b": [\n    1,\n    2\n  ],\n  "a": "é"\n}\n{"x": 1}\ntok'


def test_plain_table_aligns_columns():
    assert plain_table(["a", "n"], [["x", "1"], ["yyy", "100"]], right=["n"]) == "A      N\nx      1\nyyy  100\n"


@pytest.mark.parametrize(("value", "text"), [
    (None, "-"), (True, "yes"), (1234567, "1234567"), (2.3456789, "2.346"), (13.228749, "13.23"),
    (0.0001234, "0.000123"), (12345.6, "12,346"), (0.0, "0"), ({}, "-"), ({"a": 1}, '{"a": 1}'), ("s", "s"),
])
def test_cells(value, text):
    assert cell(value) == text


def test_numbers_and_durations():
    assert number(None) == "-" and number(float("inf")) == "inf"
    assert [duration(s) for s in (None, -1, 0, 42.4, 185, 3720)] == ["-", "-", "0s", "42s", "3m05s", "1h02m"]
    assert when("2026-11-25T13:42:16.123456Z") == "2026-11-25 13:42:16" and when(None) == "-"
