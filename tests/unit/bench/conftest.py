"""Shared fixtures for the benchmarks' tests: a small corpus made here."""

from __future__ import annotations

import pytest

_LINES = ["the cat sat on the mat.", "the dog sat on the log.", "a cat and a dog met on the mat."]


@pytest.fixture(scope="session")
def corpus() -> str:
    return "\n".join(_LINES[i % len(_LINES)] for i in range(300)) + "\n"
