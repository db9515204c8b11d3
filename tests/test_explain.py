"""The words testrack uses for tests it could not run normally."""

from __future__ import annotations

from testrack import explain
from testrack.rack import Device, Rack

RACK = Rack((Device("board-1", "board", "a"), Device("phone-1", "phone", "b")), source="lab.toml")

DUMP = """Current thread 0x00007f (most recent call first):
  File "/src/tests/test_x.py", line 5 in test_hang
  File "/venv/lib/python3.11/site-packages/_pytest/python.py", line 157 in pytest_pyfunc_call
  File "/venv/lib/python3.11/site-packages/pluggy/_callers.py", line 103 in _multicall
  File "/venv/lib/python3.11/site-packages/_pytest/runner.py", line 174 in pytest_runtest_call

Thread 0x00007e (most recent call first):
  File "/src/tests/helpers.py", line 9 in poll
  File "/venv/lib/python3.11/site-packages/_pytest/main.py", line 1 in x"""


def test_stacks_are_cut_where_pytest_begins_in_every_thread() -> None:
    """Each thread keeps its own frames, then one line standing for pytest's."""
    assert explain.trim_stacks(DUMP).splitlines() == [
        "Current thread 0x00007f (most recent call first):",
        '  File "/src/tests/test_x.py", line 5 in test_hang',
        "  ... (pytest's own frames)",
        "",
        "Thread 0x00007e (most recent call first):",
        '  File "/src/tests/helpers.py", line 9 in poll',
        "  ... (pytest's own frames)",
    ]


def test_crash_text_names_worker_device_how_and_the_retry_option() -> None:
    """Without retries the text says why, and which option allows them."""
    text = explain.crash("gw1", "board-2", "exited with code 3", "", retries_allowed=False, timed_out=False)
    assert text.splitlines() == [
        "worker gw1 on device board-2 exited with code 3 while running this test (it was not retried: "
        "a crashing test could take down another device; --rack-retry-crashed N allows N retries on "
        "other devices).",
        "last output of the worker:",
        "(none)",
    ]
    timed = explain.crash(
        "gw0", "board-1", "timed out after 3 s", "stack", retries_allowed=True, timed_out=True
    )
    assert "(it was retried as often as --rack-retry-crashed allows)" in timed
    assert timed.endswith("stacks of the worker's threads:\nstack")


def test_unmatched_and_failed_elsewhere_name_the_rack_and_the_fix() -> None:
    """Routing messages name the requirement, the rack file, its kinds and the fix."""
    text = explain.unmatched([(("kind", ("gpu",)),)], RACK)
    assert text == (
        "no device in the rack can run this test: it needs kind='gpu', and the rack (lab.toml) has "
        "board (board-1), phone (phone-1). Add a matching device to the rack or change the test's "
        "@pytest.mark.device marker."
    )
    assert explain.failed_elsewhere({"board-9"}, RACK).endswith(
        "failed last time on board-9, which this rack (lab.toml) cannot run it on; add "
        "--rack-failed-anywhere to run it on any matching device"
    )


def test_no_device_left_names_each_device_and_leaves_the_reasons_to_the_summary() -> None:
    """When no device is left, every device it could have run on is named, with what became of it;
    the reasons (long, the same for every test) are said once, in the summary."""
    text = explain.no_device_left({"b", "a"}, {"a": "quarantined: fan failure"})
    expected = "no working device left to run this test: it can run on a, b, and a is quarantined; "
    expected += "b has no worker left (the reasons are in the testrack summary below)"
    assert text == expected


def test_no_set_left_says_which_devices_still_work_and_how_many_are_needed() -> None:
    """Two phones needed, phone-2 quarantined: the old words said phone-1 had "no worker left",
    though it was fine and had just passed a test."""
    text = explain.no_set_left(["phone-2", "phone-1"], {"phone-2": "quarantined: no signal"}, 2)
    assert text == (
        "no set of working devices left for this test: it needs 2 at once among phone-1, phone-2; "
        "phone-2 is quarantined, so only phone-1 can take part (the reasons are in the testrack "
        "summary below)"
    )
