"""Several PBXes, one ledger: one pbxguard per Asterisk, both writing to one PostgreSQL.

Two real Asterisks from the bundle, each with the project's dialplan, its own phones, carrier
and AMI proxy, and its own pbxguard with its own ``[site] name``. The same extensions exist at
both (2999, missing from the directory, and 2998), as they would at two branches: an unknown
caller's offences escalate per extension and site, a person's across the company. Each site's
bypass calls must be cut by its own guard over its own AMI link; the shared ledger must hold
every offence once, under its site; ``pbxguard ledger --site`` must show one site's rows only;
and ``pbxguard ledger verify`` must find both sites' hash chains intact.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from pbxguard.protocol.ami import AmiMessage
from tests.support.pbx.bundle import bundle_or_skip, unpack
from tests.support.pbx.config import Ports
from tests.support.pbx.daemon import PbxGuardProcess
from tests.support.pbx.measure import tally
from tests.support.pbx.pjsua import SipMessage
from tests.support.pbx.site import PbxSite
from tests.support.postgres import postgres_cluster, postgres_url

__all__ = ["postgres_cluster", "postgres_url"]  # fixtures used by the tests below

pytestmark = [pytest.mark.pbx, pytest.mark.asyncio(loop_scope="session")]

MAIN = "reference"  # the session site's policy keeps the reference site's name
BRANCH = "branch"
#: (phone, number) dialled at each site, in this order: the same phones at both sites.
CALLS = [("2999", "00441632960123"), ("2998", "16812345678"), ("2999", "01087654321")]
WAIT = 15.0


@pytest_asyncio.fixture(loop_scope="session")
async def branch(pbx: PbxSite) -> AsyncIterator[PbxSite]:
    """A second Asterisk from the bundle: another site, with the bypass phones 2999 and 2998
    and the watched phones its policy protects (which would otherwise be offences of their own)."""
    workdir = pbx.workdir / "branch"
    runtime = unpack(bundle_or_skip(), workdir / "bundle")
    async with PbxSite.running(
        runtime,
        workdir,
        site_name=BRANCH,
        only=("2999", "2998", "8000", "8001", "8002"),
        ports=Ports.choose(apart_from=pbx.ports),
    ) as site:
        yield site


async def cancelled(site: PbxSite, invite: SipMessage) -> SipMessage:
    """The carrier's CANCEL of the call ``invite`` opened."""
    return await site.carrier.wait_until(
        lambda: next(
            (m for m in site.carrier.requests("CANCEL") if m.call_id == invite.call_id), None
        ),
        WAIT,
    )


def trunk_dials(site: PbxSite, mark: int) -> list[AmiMessage]:
    """The DialBegin events to the site's trunk since ``mark``, as the site's Asterisk said."""
    return [
        e
        for e in site.events.since(mark)
        if e.event == "DialBegin" and (e.get("DestChannel") or "").startswith("PJSIP/carrier-")
    ]


async def call_and_cut(site: PbxSite) -> list[SipMessage]:
    """Dial every call of `CALLS` in turn; each must reach the carrier and be cancelled."""
    cancels = []
    for ext, number in CALLS:
        call = site.dial(ext, number)
        invite = await call.reaches_carrier()
        cancels.append(await cancelled(site, invite))
        await call.ended()
        await site.quiesce()
    return cancels


async def rows_of(guard: PbxGuardProcess, *options: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = json.loads(
        await guard.command("ledger", *options, "--format", "json")
    )
    return found


async def test_two_pbxes_write_one_ledger_each_under_its_own_site(
    pbx: PbxSite, branch: PbxSite, postgres_url: str
) -> None:
    marks = {MAIN: pbx.events.mark, BRANCH: branch.events.mark}
    sent = {MAIN: len(pbx.proxy.hangups), BRANCH: len(branch.proxy.hangups)}
    sites = {MAIN: pbx, BRANCH: branch}
    async with (
        pbx.guard(ledger_url=postgres_url) as main_guard,
        branch.guard(ledger_url=postgres_url) as branch_guard,
    ):
        for site in sites.values():
            assert len(await call_and_cut(site)) == len(CALLS)
    # Both guards stopped: each drained its journal into the shared ledger.
    every = await rows_of(main_guard)
    by_site = {
        MAIN: await rows_of(branch_guard, "--site", MAIN),
        BRANCH: await rows_of(main_guard, "--site", BRANCH),
    }
    verify: dict[str, Any] = json.loads(await main_guard.command("ledger", "verify", "--json"))

    legs = {name: trunk_dials(site, marks[name]) for name, site in sites.items()}
    hangups = {
        name: [m.get("Channel") for m in site.proxy.hangups[sent[name] :]]
        for name, site in sites.items()
    }
    chained = {(h["table"], h["site"]) for h in verify["heads"]}
    tally(
        "several PBXes, one ledger (two Asterisks, one PostgreSQL)",
        [
            *(
                (
                    f"{name}: forbidden calls / cut by its own guard",
                    f"{len(CALLS)} / {len(hangups[name])}",
                )
                for name in sites
            ),
            ("offences in the shared ledger", len(every)),
            *((f"pbxguard ledger --site {name}", len(rows)) for name, rows in by_site.items()),
            (
                "escalation steps",
                ", ".join(f"{r['site']} {r['extension']} {r['step']}" for r in every),
            ),
            ("hash chains (table, site)", len(chained)),
            ("ledger verify", "intact" if verify["intact"] else f"BROKEN {verify['breaks']}"),
        ],
    )

    for name in sites:
        # Cut by its own guard, over its own AMI link: one Hangup per trunk leg of its own.
        assert sorted(hangups[name]) == sorted(e.get("DestChannel") for e in legs[name]), name
        mine = [r for r in every if r["site"] == name]
        assert sorted((r["extension"], r["number"]) for r in mine) == sorted(CALLS), name
        assert {r["linkedid"] for r in mine} == {e.get("Linkedid") for e in legs[name]}, name
        assert all(r["outcome_code"] == "hung_up" for r in mine), mine
        assert by_site[name] == mine
        assert {(t, name) for t in ("offences", "decisions", "calls")} <= chained
    assert len(every) == 2 * len(CALLS)
    # Extension 2999 is nobody in the directory: its offences count against the extension,
    # and the same extension at another PBX is another phone. Each site's first is a first.
    for name in sites:
        steps = [r["step"] for r in every if r["site"] == name and r["extension"] == "2999"]
        assert steps == [1, 2], (name, steps)
    assert verify["intact"], verify["breaks"]
