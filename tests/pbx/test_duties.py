"""Duty lines on the real PBX: the hotline's answering time, dead duty phones, the alarm phone.

- AN-1: an outside call to the hotline DID rings 8001 and 8002 past the answering limit
  (15 s in the reference policy) until [from-carrier]'s Dial gives up at 30 s.
- DT-1 / EM-2: the pjsua of the hotline phone 8001 and of the alarm phone 8000 is killed; the
  PBX's qualify reports them Unreachable (the tier qualifies watched phones every 2 s) and
  pbxguard must raise an alert within 30 s of that report, and record the outage as an
  offence once the phone is back. The tier's policy declares a special period around today,
  so DT-1's working-hours standby runs around the clock and the test does not depend on the
  hour it runs.
- EM-1: an internal call occupies the alarm phone past its grace (5 s in the tier's policy):
  recorded, and cut (the reference site sets cut_occupancy).
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from pbxguard.protocol.ami import AmiMessage
from tests.support.pbx.config import HOTLINE_DID
from tests.support.pbx.daemon import PbxGuardProcess
from tests.support.pbx.measure import record
from tests.support.pbx.site import OCCUPANCY_GRACE, SITE_TIMEZONE, PbxSite

pytestmark = [pytest.mark.pbx, pytest.mark.asyncio(loop_scope="session")]

ALERT_WITHIN = 30.0  # EM-2: the alarm phone unreachable is an alert within 30 s


async def test_an_unanswered_hotline_call_is_an_an1_offence_for_each_duty_phone(
    pbx: PbxSite, guard: PbxGuardProcess
) -> None:
    call = pbx.dial_in(HOTLINE_DID)
    for ext in ("8001", "8002"):
        await pbx.phones[ext].ringing(since=call.placed)
    ended = await call.ended(within=45)
    record("hotline DID rang unanswered until Dial gave up", call.delay(ended), "30 s, AN-1 x2")
    await pbx.quiesce()
    rows = await guard.wait_for_offences(lambda r: r["rule"] == "AN-1", count=2)
    assert sorted(r["extension"] for r in rows) == ["8001", "8002"]
    assert all("not answered" in r["detail_en"] for r in rows)
    # The rota's person on duty on the hotline answers for it.
    assert {r["person_id"] for r in rows} == {"duty-wang"}


def reachability(events: list[AmiMessage], aor: str) -> list[tuple[str, float]]:
    """The PBX's ContactStatus reports for ``aor``: (status, Timestamp)."""
    return [
        (e.get("ContactStatus") or "", float(e.get("Timestamp") or 0))
        for e in events
        if e.event == "ContactStatus"
        and e.get("AOR") == aor
        and e.get("ContactStatus") in ("Reachable", "Unreachable")
    ]


async def test_killed_duty_phones_alert_within_30_s_and_are_recorded_when_back(
    pbx: PbxSite, guard: PbxGuardProcess
) -> None:
    mark = pbx.events.mark
    lines = {"8001": "DT-1", "8000": "EM-2"}
    for ext in lines:
        pbx.phones[ext].kill()
    for ext, rule in lines.items():
        alert = await guard.wait_for_log(
            "alert", lambda line, ext=ext: line["line"] == ext, within=ALERT_WITHIN + 15
        )
        assert (alert["rule"], alert["kind"]) == (rule, "unreachable")
        reported = await pbx.events.wait_until(
            lambda ext=ext: next(
                (at for s, at in reachability(pbx.events.since(mark), ext) if s == "Unreachable"),
                None,
            )
        )
        alerted = datetime.fromisoformat(alert["timestamp"]).astimezone(UTC).timestamp()
        delay = record(
            f"{ext} killed: from the PBX's Unreachable to pbxguard's {rule} alert",
            alerted - reported,
            f"within {ALERT_WITHIN:.0f} s",
        )
        assert delay < ALERT_WITHIN
    for ext in lines:
        await pbx.restart_phone(ext)
        await guard.wait_for_log("alert cleared", lambda line, ext=ext: line["line"] == ext)
    await guard.stop()
    rows = await guard.ledger()
    for ext, rule in lines.items():
        outages = {
            site_time(at)
            for s, at in reachability(pbx.events.since(mark), ext)
            if s == "Unreachable"
        }
        recorded = {r["at"] for r in rows if r["rule"] == rule and r["extension"] == ext}
        # Every offence is an outage the PBX reported, starting when it reported it, and the
        # kill's outage is one of them. (Right after a phone is back, a qualify that was
        # already on its way can still time out: the PBX then reports one more short outage,
        # which pbxguard records as well if it sees it before it stops.)
        first = min(outages)
        assert first in recorded, (ext, sorted(outages), sorted(recorded))
        assert recorded <= outages, (ext, sorted(outages), sorted(recorded))


def site_time(timestamp: float) -> str:
    """A PBX Timestamp as the ledger prints it: site time, to the second."""
    return datetime.fromtimestamp(timestamp, SITE_TIMEZONE).strftime("%Y-%m-%d %H:%M:%S")


async def test_an_inbound_call_occupying_the_alarm_phone_is_em1_and_cut(
    pbx: PbxSite, guard: PbxGuardProcess
) -> None:
    call = pbx.dial("2001", "8000")
    alarm = pbx.phones["8000"]
    await alarm.ringing(since=call.placed)
    alarm.answer()
    answered = await call.wait_state("CONFIRMED")
    ended = await call.ended(within=OCCUPANCY_GRACE + 15)
    record(
        "2001 -> 8000 answered: cut by pbxguard after",
        call.delay(ended) - call.delay(answered),
        f"the {OCCUPANCY_GRACE} s grace of the tier's policy",
    )
    await pbx.quiesce()
    [hangup] = guard.logged("hangup accepted")
    assert hangup["rule"] == "EM-1"
    assert hangup["channel"].startswith("PJSIP/8000-")
    await guard.stop()
    rows = [(r["rule"], r["amount"]) for r in await guard.ledger()]
    assert rows == [("EM-1", "50.00")]
