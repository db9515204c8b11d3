"""The report as one HTML file: the page's own CSS and JavaScript, and the run's data in it.

The data is JSON, compressed with zlib (the page inflates it with the browser's
``DecompressionStream``) and written as base64 into two ``<script>`` blocks: the run,
and apart from it the failures' texts and captured output, which the page decodes only
when someone opens one. Nothing is fetched: the page's Content-Security-Policy forbids it.
"""

from __future__ import annotations

import base64
import html
import json
import os
import re
import zlib
from importlib import resources
from pathlib import Path
from typing import Any

from testrack.report.model import Report

_PLACEHOLDER = re.compile(r"__(TITLE|VERSION|CSS|JS|DATA|DETAILS)__")


def _asset(name: str) -> str:
    return resources.files("testrack.report").joinpath("assets", name).read_text(encoding="utf-8")


def _pack(value: Any) -> str:
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return base64.b64encode(zlib.compress(text.encode("utf-8", "replace"), 3)).decode("ascii")


def render(report: Report) -> str:
    """The whole page, self-contained."""
    from testrack import __version__

    summary = report.summary()
    values = {
        "TITLE": html.escape(f"testrack run {report.run.id}: {summary['counts']}"),
        "VERSION": html.escape(__version__),
        "CSS": _asset("page.css"),
        "JS": _asset("page.js"),
        "DATA": _pack(report.payload()),
        "DETAILS": _pack(report.details_payload()),
    }
    return _PLACEHOLDER.sub(lambda match: values[match[1]], _asset("page.html"))


def write(report: Report, path: Path) -> int:
    """Write the page to ``path`` (whole or not at all); return its size in bytes."""
    data = render(report).encode("utf-8", "replace")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        partial.write_bytes(data)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return len(data)
