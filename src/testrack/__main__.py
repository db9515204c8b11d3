"""``python -m testrack``: the ``testrack`` command, for when the script is not on PATH."""

from testrack.cli import main

raise SystemExit(main())
