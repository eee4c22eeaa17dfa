"""``pbxguard run``: the daemon beside a PBX."""

from __future__ import annotations

import argparse
import asyncio

from pbxguard.adapters.logs import configure_logging
from pbxguard.adapters.loop_watch import tune_interpreter
from pbxguard.adapters.settings import load_settings
from pbxguard.bootstrap import build
from pbxguard.entrypoints.daemon import Daemon, install_stop_signals


async def _run(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    configure_logging(settings.log_level)
    parts = build(settings, loop=asyncio.get_running_loop())
    # What start-up built lives as long as the process: out of the collector's sight. (The
    # process's own settings, so here and not in the Daemon, which tests run in-process.)
    tune_interpreter()
    stop = asyncio.Event()
    install_stop_signals(stop)
    await Daemon(parts).run(stop)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Run the daemon until SIGTERM or SIGINT."""
    return asyncio.run(_run(args))
