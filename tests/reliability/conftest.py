"""Counts what the reliability tests tried, printed as one summary line at the end of the run."""

from __future__ import annotations

import pytest

TALLY = {
    "bad inputs tried": 0,
    "kills survived": 0,
    "corruptions detected": 0,
    "samples lost": 0,
    "concurrent builds refused": 0,
    "duplicates caught": 0,
}


@pytest.fixture
def tally():
    return TALLY


def pytest_terminal_summary(terminalreporter):
    if any(TALLY.values()):
        line = ", ".join(f"{k}: {v}" for k, v in TALLY.items())
        terminalreporter.write_line(f"reliability: {line}")
