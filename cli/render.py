"""How the CLI writes: Rich tables and colours on a terminal, plain aligned text when stdout is a pipe or a file,
JSON when asked. Results go to stdout; notes, progress and errors to stderr, so `lfz ... > file` keeps only data.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Mapping, Sequence
from typing import IO, Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table


def use_rich(is_terminal: bool, env: Mapping[str, str]) -> bool:
    """Rich layout only on a real terminal; `TERM=dumb` (editors' shells) and `LFZ_PLAIN` ask for plain text."""
    if env.get("LFZ_PLAIN", "").strip() not in ("", "0"):
        return False
    return is_terminal and env.get("TERM", "") != "dumb"


class Output:
    def __init__(self, *, rich: bool | None = None, stdout: IO[str] | None = None, stderr: IO[str] | None = None,
                 env: Mapping[str, str] | None = None):
        env = os.environ if env is None else env
        self.out = Console(file=stdout or sys.stdout, highlight=False, soft_wrap=True)
        self.err = Console(file=stderr or sys.stderr, highlight=False, soft_wrap=True)
        self.rich = use_rich(self.out.is_terminal, env) if rich is None else rich
        self.rich_err = use_rich(self.err.is_terminal, env) if rich is None else rich

    # -- data (stdout) ------------------------------------------------------------------------------------------------

    def json(self, value: Any) -> None:
        self.raw(json.dumps(value, indent=2, ensure_ascii=False, default=str) + "\n")

    def json_line(self, value: Any) -> None:
        self.raw(json.dumps(value, ensure_ascii=False, default=str) + "\n")

    def raw(self, text: str) -> None:
        """Text exactly as given (streamed tokens, JSON): no markup, no wrapping, flushed at once."""
        self.out.file.write(text)
        self.out.file.flush()

    def line(self, text: str = "", style: str | None = None) -> None:
        if self.rich:
            self.out.print(escape(text), style=style)
        else:
            self.raw(text + "\n")

    def table(self, columns: Sequence[str], rows: Sequence[Sequence[Any]], title: str | None = None,
              right: Sequence[str] = ()) -> None:
        """Columns named in `right` are right-aligned (numbers)."""
        cells = [[cell(v) for v in row] for row in rows]
        if self.rich:
            table = Table(title=title, title_justify="left", header_style="bold")
            for name in columns:
                table.add_column(name, justify="right" if name in right else "left", overflow="fold")
            for row in cells:
                table.add_row(*(escape(v) for v in row))
            self.out.print(table)
            return
        if title:
            self.raw(title + "\n")
        self.raw(plain_table(columns, cells, right))

    def fields(self, pairs: Sequence[tuple[str, Any]], title: str | None = None) -> None:
        """A record as `name: value` lines (a two-column grid on a terminal)."""
        if self.rich:
            grid = Table.grid(padding=(0, 2))
            grid.add_column(style="bold")
            grid.add_column(overflow="fold")
            for name, value in pairs:
                grid.add_row(escape(name), escape(cell(value)))
            if title:
                self.out.print(f"[bold]{escape(title)}[/bold]")
            self.out.print(grid)
            return
        if title:
            self.raw(title + "\n")
        width = max((len(name) for name, _ in pairs), default=0)
        self.raw("".join(f"{name + ':':<{width + 1}} {cell(value)}\n" for name, value in pairs))

    # -- notes and errors (stderr) ------------------------------------------------------------------------------------

    def note(self, text: str, style: str = "dim") -> None:
        if self.rich_err:
            self.err.print(escape(text), style=style)
        else:
            self.err.file.write(text + "\n")
            self.err.file.flush()

    def error(self, text: str) -> None:
        if self.rich_err:
            self.err.print(f"[bold red]error:[/bold red] {escape(text)}")
        else:
            self.err.file.write(f"error: {text}\n")
            self.err.file.flush()


def plain_table(columns: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[str] = ()) -> str:
    widths = [max([len(name), *(len(row[i]) for row in rows)]) for i, name in enumerate(columns)]

    def fmt(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if name in right else v.ljust(w) for v, w, name in zip(values, widths, columns)]
        return "  ".join(parts).rstrip() + "\n"

    return fmt([c.upper() for c in columns]) + "".join(fmt(row) for row in rows)


def cell(value: Any) -> str:
    """A value as a table shows it: numbers rounded for reading, None as a dash, dicts as compact JSON."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return number(value)
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, default=str) if value else "-"
    return str(value)


def number(value: float | int | None, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return f"{value:,}"
    if not math.isfinite(value):
        return str(value)
    if value != 0 and (abs(value) >= 1e6 or abs(value) < 1e-3):
        return f"{value:.3g}"
    return f"{value:.{digits}g}" if abs(value) < 10 ** digits else f"{value:,.0f}"


def duration(seconds: float | None) -> str:
    """`42s`, `3m05s`, `1h02m`; a dash when unknown."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "-"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def when(value: str | None) -> str:
    """An ISO time from the API as `YYYY-MM-DD HH:MM:SS` (UTC, as the server wrote it)."""
    if not value:
        return "-"
    return value.replace("T", " ")[:19]
