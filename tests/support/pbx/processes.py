"""Make sure nothing the tier starts outlives the test run.

Every process is stopped by its PID when its test or the session ends. Two nets catch what an
interrupted run would leave behind: each child asks the kernel for SIGKILL when the test
process dies (``PR_SET_PDEATHSIG``, which survives the ``exec`` of asterisk.sh and pjsua.sh),
and an ``atexit`` hook kills, by PID, every child still registered when Python exits.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import signal

_PR_SET_PDEATHSIG = 1
_alive: set[int] = set()


def die_with_parent() -> None:
    """``preexec_fn`` for a child: the kernel kills it when the test process dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def started(pid: int) -> None:
    """Remember a child until :func:`reaped`."""
    _alive.add(pid)


def reaped(pid: int) -> None:
    """Forget a child that has been waited for."""
    _alive.discard(pid)


@atexit.register
def _kill_leftovers() -> None:
    for pid in list(_alive):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
