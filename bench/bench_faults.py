"""The fault scenarios of tests/faults with many more faults (kill -9, AMI, PostgreSQL, SQLite).

Run: ``.venv/bin/python bench/bench_faults.py`` (about 8 minutes on 2 busy cores; ``--kills``,
``--drops``, ``--outages``, ``--locks`` scale it, ``--only kill`` runs one scenario,
``PBXGUARD_FAULT_SEED`` or ``--seed`` replays a run's choices). ``pbxguard run`` runs as a process
beside the simulated PBX replaying rounds of the recorded forbidden calls, emergency calls and a
burst of five calls at once, each a call of its own; the faults are injected at seeded random
moments (tests/faults/harness.py does the work). Printed: the seed, the load average before and
after, one column per scenario with the faults injected and how the three promises held
(offences expected / recorded / lost / doubled / misattributed, forbidden calls left running,
rows falsely saying stopped, emergency calls touched), and DialBegin → Hangup p50/p99 under the
faults (a kill or a drop between the two counts in full). Baselines measured in the same run:
the same harness with no fault (the first column), and ``bench_reaction.py``'s bare asyncio
client and guard with its write-ahead journal against a stand-in PBX. Exit status 1 when a
promise broke.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bench_reaction
from tests.faults.harness import SEED_ENV, FaultRun, Tally, fault_seed, percentile, table
from tests.support.postgres import PostgresCluster

from pbxguard.adapters.logs import configure_logging

SCENARIOS = ("none", "kill", "drops", "postgres", "sqlite")


def share(rng: random.Random, total: int, kinds: dict[str, float]) -> list[str]:
    """Split ``total`` faults between ``kinds`` by weight, shuffled."""
    plan = [kind for kind, weight in kinds.items() for _ in range(round(total * weight))]
    rng.shuffle(plan)
    return plan


async def scenario(name: str, args: argparse.Namespace, seed: int, workdir: Path) -> Tally:
    tmp = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=workdir))
    if name == "none":
        # The same harness with nothing broken: the baseline of the reaction under faults.
        run = FaultRun("no fault", tmp, rounds=3, seed=seed)
        async with run.running():
            return await run.finish()
    if name == "kill":
        # "kill-starting" kills twice: once at a random moment, once while starting again.
        run = FaultRun("kill -9", tmp, rounds=max(3, args.kills // 3), seed=seed)
        plan = share(
            run.rng,
            args.kills,
            {"kill": 0.5, "kill-at-hangup": 0.3, "kill-starting": 0.1},
        )
        async with run.running():
            await run.inject(plan)
            return await run.finish()
    if name == "drops":
        run = FaultRun("AMI drops", tmp, rounds=max(3, args.drops // 7), seed=seed)
        plan = share(
            run.rng,
            args.drops,
            {
                "drop": 0.4,
                "drop-at-hangup-lost": 0.25,
                "drop-at-hangup-done": 0.25,
                "half-open": 0.1,
            },
        )
        async with run.running():
            await run.inject(plan)
            return await run.finish()
    if name == "postgres":
        cluster = PostgresCluster(durable=True)
        cluster.start()
        try:
            run = FaultRun(
                "PostgreSQL", tmp, rounds=max(3, args.outages), seed=seed, postgres=cluster
            )
            plan = share(
                run.rng,
                args.outages,
                {"pg-fast": 0.3, "pg-immediate": 0.3, "pg-immediate-kill": 0.2, "drop": 0.2},
            )
            plan.append("pg-down-restart-after-cut")
            async with run.running():
                await run.inject(plan)
                return await run.finish()
        finally:
            cluster.destroy()
    run = FaultRun("SQLite locked", tmp, rounds=max(5, args.locks * 2), seed=seed, speed=0.1)
    plan = share(run.rng, args.locks, {"lock": 0.75, "lock-kill": 0.25})
    async with run.running():
        await run.inject(plan)
        return await run.finish()


def reaction_line(name: str, values: list[float]) -> str:
    p50, p99 = percentile(values, 0.5) * 1000, percentile(values, 0.99) * 1000
    return f"{name:<44}: p50 {p50:8.3f} ms   p99 {p99:8.3f} ms   ({len(values)} calls)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=50)
    parser.add_argument("--drops", type=int, default=100)
    parser.add_argument("--outages", type=int, default=8)
    parser.add_argument("--locks", type=int, default=8)
    parser.add_argument("--only", choices=SCENARIOS, action="append")
    parser.add_argument("--seed", type=int)
    args = parser.parse_args()
    configure_logging("warning")
    if args.seed is not None:
        os.environ[SEED_ENV] = str(args.seed)
    seed = fault_seed()
    load_before = os.getloadavg()
    print(f"seed {seed} ({SEED_ENV}={seed} replays it); load average {load_before[0]:.2f}")
    tallies: list[Tally] = []
    with tempfile.TemporaryDirectory(prefix="bench-faults-") as workdir:
        for name in args.only or SCENARIOS:
            tallies.append(asyncio.run(scenario(name, args, seed, Path(workdir))))
            print(f"  {name}: done", flush=True)
    bare = bench_reaction.measure("bare")
    journal = bench_reaction.measure("guard", "group")
    load_after = os.getloadavg()
    print()
    print("\n".join(table(tallies)))
    print()
    print("DialBegin → Hangup")
    print(reaction_line("bare asyncio client, no fault (baseline)", bare))
    print(reaction_line("pbxguard, write-ahead (group), no fault", journal))
    for tally in tallies:
        if tally.reactions:
            print(
                reaction_line(
                    f"pbxguard beside the simulated PBX: {tally.scenario}", tally.reactions
                )
            )
    print(
        f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after "
        f"(1 min; 5 min {load_after[1]:.2f}) on {os.cpu_count()} cores"
    )
    broken = sum(t.broken + t.unsettled + t.daemon_exits for t in tallies)
    print(f"promises broken: {broken}")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
