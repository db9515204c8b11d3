"""Passwords in share and store URLs never reach a message, a report or the store.

Every message that names a share or a store goes through :func:`redact`, and the command line
a store keeps goes through :func:`redact_command`. libpq still finds passwords in
``PGPASSWORD`` and ``~/.pgpass``, which is where they belong.
"""

from __future__ import annotations

import re

MASK = "***"

# scheme://user:password@host  (the password is anything up to the last '@' of the authority)
_URL_PASSWORD = re.compile(
    r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*:)(?P<secret>[^\s/@]*(?:@[^\s/@]*)*)(?=@)"
)
# password=... in a query string (?password=x&...) or a libpq key=value string (password=x dbname=y)
_KEY_PASSWORD = re.compile(
    r"(?P<head>\b(?:password|passwd|sslpassword)\s*=\s*)(?P<secret>'(?:[^'\\]|\\.)*'|[^\s&;]+)", re.I
)


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***`` (user, host and database stay readable)."""
    text = _URL_PASSWORD.sub(lambda m: m["head"] + MASK, url)
    return _KEY_PASSWORD.sub(lambda m: m["head"] + MASK, text)


def redact_command(command: str) -> str:
    """A command line with every URL password and ``password=`` value masked."""
    return redact(command)
