"""xdist's worker fixtures, for suites and plugins that expect them without xdist installed.

Registered by the plugin in testrack workers and controllers only when pytest-xdist
is absent (xdist's own fixtures give the same values from the same ``workerinput``).
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def worker_id(request: pytest.FixtureRequest) -> str:
    """``gw0``, ``gw1``, ... in a worker; ``master`` in a plain run, as with xdist."""
    workerinput = getattr(request.config, "workerinput", None)
    return str(workerinput["workerid"]) if workerinput else "master"


@pytest.fixture(scope="session")
def testrun_uid(request: pytest.FixtureRequest) -> str:
    """One id shared by every worker of a run."""
    workerinput = getattr(request.config, "workerinput", None)
    return str(workerinput["testrunuid"]) if workerinput else "local"
