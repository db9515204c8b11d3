"""Where the share is: ``--rack-share`` > ``TESTRACK_SHARE`` > the rack file's ``share`` > the
default SQLite file in the user's state directory; ``off`` means no leases at all."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path

from testrack.share.backend import ShareBackend
from testrack.share.clock import SYSTEM_CLOCK, Clock
from testrack.share.errors import ShareUnavailable
from testrack.share.pgschema import is_postgres_url
from testrack.share.secrets import redact
from testrack.share.sqlite import default_path

OFF = "off"
ENV = "TESTRACK_SHARE"


@dataclasses.dataclass(frozen=True)
class ShareSetting:
    """A share setting and where it came from (for messages)."""

    spec: str
    """``off``, a ``postgresql://`` URL, or the path of an SQLite file."""
    source: str
    """``--rack-share``, ``TESTRACK_SHARE``, ``<rack file>: share``, or ``the default``."""

    @property
    def off(self) -> bool:
        return self.spec == OFF

    @property
    def postgres(self) -> bool:
        return is_postgres_url(self.spec)

    def describe(self) -> str:
        """For messages: the share (password redacted) and where the setting came from."""
        return f"{redact(self.spec)} (from {self.source})"


def resolve(
    option: str | None = None,
    environ: Mapping[str, str] = os.environ,
    rack_share: str | None = None,
    rack_file: Path | None = None,
) -> ShareSetting:
    """The share a run uses. A relative path in the rack file is relative to the rack file."""
    if option:
        return ShareSetting(_normal(option, Path.cwd()), "--rack-share")
    if environ.get(ENV):
        return ShareSetting(_normal(environ[ENV], Path.cwd()), ENV)
    if rack_share:
        base = rack_file.parent if rack_file is not None else Path.cwd()
        where = f"{rack_file}: share" if rack_file is not None else "the rack file's share"
        return ShareSetting(_normal(rack_share, base), where)
    return ShareSetting(str(default_path(environ)), "the default")


def _normal(spec: str, base: Path) -> str:
    spec = spec.strip()
    if spec.lower() == OFF or is_postgres_url(spec):
        return spec.lower() if spec.lower() == OFF else spec
    path = Path(spec).expanduser()
    return str(path if path.is_absolute() else base / path)


def open_share(setting: ShareSetting, clock: Clock = SYSTEM_CLOCK) -> ShareBackend | None:
    """The backend for ``setting``, or None for ``off``. ShareUnavailable names the share, where
    the setting came from, and ``--rack-share off`` (it never runs unleased silently)."""
    if setting.off:
        return None
    try:
        if setting.postgres:
            from testrack.share.postgres import PostgresShare

            return PostgresShare(setting.spec, clock=clock)
        from testrack.share.sqlite import SQLiteShare

        return SQLiteShare(Path(setting.spec), clock=clock)
    except ShareUnavailable as exc:
        raise ShareUnavailable(f"{exc} [share from {setting.source}]") from None
