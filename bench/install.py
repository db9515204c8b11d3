"""Which testrack a benchmark measures: the figures users get come from a regular install.

An editable install of this checkout compiles testrack's modules on every run where bytecode is
not cached, and usually sits beside the test extras: pytest plugins (hypothesis, pytest-cov, ...)
that every pytest process of a benchmark then loads, and whose start-up and end-of-session work
is no part of testrack's.
"""

from __future__ import annotations

import sys
from pathlib import Path


def warn_if_editable(root: Path, extras: str) -> None:
    import testrack

    if Path(testrack.__file__).resolve().is_relative_to(root / "src"):
        print(
            "warning: testrack is an editable install of this checkout here, likely with its test "
            "extras (pytest plugins every benchmarked process loads); for the figures users get, "
            f"benchmark a regular install: python3 -m venv .bench && .bench/bin/pip install '.[{extras}]'",
            file=sys.stderr,
        )
