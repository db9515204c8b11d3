"""Which code a run ran: the git commit, and whether (and how) the tree differed from it.

``testrack flaky`` calls a test flaky only when it passed and failed on the same code, so
every run records its revision. A clean tree is its commit (40 hex digits); a dirty tree is
its own revision, ``<commit>-dirty-<12 hex>``, where the hash covers every changed tracked
file: its status, the blobs git knows for it, and the bytes now on disk (what ``git diff HEAD``
would show). Untracked files are left out, as ``git stash`` leaves them: a results store or a
build directory that nobody ignored must not make every run a revision of its own; so are
files under ``.testrack/``, should someone have committed the results store.

It costs one ``git status`` and reads only the changed files; anything that goes wrong (no
git, not a repository, no commit yet, a timeout) gives None, never a failed run.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

#: A run waits at most this long (seconds) for git to answer.
GIT_TIMEOUT = 10.0
DIRTY = "-dirty-"


def code_revision(root: Path) -> str | None:
    """The revision of the git work tree holding ``root``, or None when there is none to name."""
    try:
        status = subprocess.run(
            ["git", "status", "--porcelain=v2", "--branch", "-z", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            timeout=GIT_TIMEOUT,
            check=False,
            env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"},  # a status must not take the index lock
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if status.returncode != 0:
        return None
    return revision_from_status(status.stdout, _toplevel(root))


def is_dirty(revision: str | None) -> bool:
    return revision is not None and DIRTY in revision


def commit_of(revision: str) -> str:
    return revision.partition(DIRTY)[0]


def short(revision: str | None) -> str:
    """``3f2a9c1d2e4b`` or ``3f2a9c1d2e4b-dirty-ab12cd34ef56``, for people."""
    if revision is None:
        return "(no revision)"
    commit, dirty, diff = revision.partition(DIRTY)
    return commit[:12] + (dirty + diff if dirty else "")


def revision_from_status(output: bytes, toplevel: Path | None) -> str | None:
    """The revision from ``git status --porcelain=v2 --branch -z`` output.

    ``toplevel`` is the work tree's root (paths in the output are relative to it); changed
    files are read from it. Without it (or when a file cannot be read) the file's status
    line alone goes into the hash.
    """
    fields = output.split(b"\0")
    commit: str | None = None
    changes: list[bytes] = []
    i = 0
    while i < len(fields):
        field = fields[i]
        i += 1
        if field.startswith(b"# branch.oid "):
            oid = field.removeprefix(b"# branch.oid ").decode("ascii", "replace")
            commit = oid if oid != "(initial)" else None
        elif field[:2] in (b"1 ", b"u "):
            path = _path(field, 8 if field[:1] == b"1" else 10)
            if not _ours(path):
                changes.append(_entry(field, path, toplevel))
        elif field[:2] == b"2 ":
            origin = fields[i] if i < len(fields) else b""
            i += 1  # a rename or copy is followed by the path it came from
            changes.append(_entry(field + b"\0" + origin, _path(field, 9), toplevel))
    if commit is None:
        return None
    if not changes:
        return commit
    digest = hashlib.sha256(b"\0\0".join(sorted(changes))).hexdigest()
    return f"{commit}{DIRTY}{digest[:12]}"


def _ours(path: bytes) -> bool:
    """testrack's own results (``.testrack/``), should someone have committed them, change on
    every run; they are not code."""
    return b".testrack" in path.split(b"/")[:-1]


def _path(field: bytes, spaces: int) -> bytes:
    """The path after the first ``spaces`` space-separated columns (paths may hold spaces)."""
    parts = field.split(b" ", spaces)
    return parts[spaces] if len(parts) > spaces else b""


def _entry(field: bytes, path: bytes, toplevel: Path | None) -> bytes:
    """One changed file: its status line and what is on disk now."""
    if toplevel is None or not path:
        return field
    target = toplevel / os.fsdecode(path)
    try:
        if target.is_symlink():
            content = b"link:" + os.fsencode(os.readlink(target))
        elif target.is_file():
            content = hashlib.sha256(target.read_bytes()).digest()
        else:
            content = b"missing"
    except OSError:
        content = b"unreadable"
    return field + b"\0" + content


def _toplevel(root: Path) -> Path | None:
    """The work tree's root, found by walking up to the ``.git`` entry (no second git call)."""
    for directory in (root.resolve(), *root.resolve().parents):
        if (directory / ".git").exists():
            return directory
    return None
