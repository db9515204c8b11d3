"""Pure scheduling: which device may run a test, and which test a free slot runs next.

Nothing here starts a process or touches pytest's runtime; it is tested as plain
functions and objects (see ``tests/test_scheduling.py``).
"""

from testrack.scheduling.dispatch import Dispatcher, Job, Slot
from testrack.scheduling.matching import Requirement, describe_requirements, matches

__all__ = ["Dispatcher", "Job", "Requirement", "Slot", "describe_requirements", "matches"]
