"""Run the ``pbxguard`` command as ``python -m pbxguard``, e.g. where no script is on PATH."""

from __future__ import annotations

import sys

from pbxguard.cli import main

if __name__ == "__main__":
    sys.exit(main())
