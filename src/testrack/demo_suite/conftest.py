"""Settings for the demo suite; the ``device`` fixture itself comes from testrack's plugin."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini("demo_seconds", "seconds each demo test keeps its device busy", default="2.0")


@pytest.fixture
def work_ms(request: pytest.FixtureRequest) -> int:
    """The device time per test, in milliseconds, from ``demo_seconds`` in pytest.ini."""
    return round(float(request.config.getini("demo_seconds")) * 1000)
