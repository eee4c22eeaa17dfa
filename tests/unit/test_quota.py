"""The telesales quota (QU-1): what a day asks for, what counts, and the offence of a short day."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator, Sequence
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from pbxguard.adapters.policy_file import load_policy
from pbxguard.app.quota import QuotaWatch, quota_for_day
from pbxguard.domain.calendars import HolidayTable
from pbxguard.domain.effects import Effect, RecordOffence
from pbxguard.domain.entries import OffenceEntry, OffenceFilter
from pbxguard.domain.penalties import assess
from pbxguard.domain.policy import Policy, Telesales
from pbxguard.domain.quota import (
    assessed,
    count_effective,
    days_due,
    is_effective,
    quota_day,
    quota_offence,
    required_calls,
)
from pbxguard.domain.records import CallRef, CallSummary, OffenceDraft
from pbxguard.errors import PolicyError, RequestError

SHANGHAI = ZoneInfo("Asia/Shanghai")
REFERENCE_SITE = Path(__file__).parents[2] / "src/pbxguard/policies/reference-site.toml"
BASE = load_policy(REFERENCE_SITE).policy
# 1 October 2026 is a holiday; Saturday 10 October is worked in exchange (调休).
HOLIDAYS = HolidayTable(
    2026,
    2026,
    public_holidays=frozenset({date(2026, 10, 1)}),
    adjusted_working_days=frozenset({date(2026, 10, 10)}),
)
QUOTA = Telesales(
    people=("zhang-wei", "staff-2002"),
    starts=date(2026, 10, 1),
    min_talk=timedelta(seconds=30),
    workdays=HOLIDAYS,
)
POLICY = dataclasses.replace(BASE, telesales=QUOTA)


def local(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=SHANGHAI)  # type: ignore[misc]


def call(person: str, start: datetime, talk: float | None, seq: int = 1) -> CallSummary:
    answered = start + timedelta(seconds=5) if talk is not None else None
    ended = (answered or start) + timedelta(seconds=talk or 0)
    return CallSummary(
        call=CallRef(f"{start.timestamp()}.{seq}", f"{start.timestamp()}.{seq}", "PJSIP/2003-1"),
        extension="2003",
        person_id=person,
        person_name="",
        department="",
        caller_name="",
        dialled="13800138000",
        number="13800138000",
        number_class="mobile",
        direction="outbound",
        started_at=start,
        answered_at=answered,
        ended_at=ended,
        verdict="allow",
        rule_id="",
        outcome="answered" if talk is not None else "unanswered",
    )


@pytest.mark.parametrize(
    ("day", "required"),
    [(1, 80), (15, 80), (16, 120), (31, 120)],
)
def test_the_first_half_of_the_month_asks_for_fewer_calls(day: int, required: int) -> None:
    assert required_calls(QUOTA, date(2026, 10, day)) == required


def test_the_half_and_the_amounts_are_settings() -> None:
    custom = dataclasses.replace(QUOTA, daily=100, first_half=60, first_half_last_day=10)
    assert [required_calls(custom, date(2026, 10, d)) for d in (10, 11)] == [60, 100]


@pytest.mark.parametrize(
    ("day", "counts"),
    [
        (date(2026, 9, 30), False),  # before the quota starts
        (date(2026, 10, 1), False),  # a public holiday
        (date(2026, 10, 2), True),  # a Friday
        (date(2026, 10, 3), False),  # a Saturday
        (date(2026, 10, 10), True),  # a Saturday worked in exchange
    ],
)
def test_only_working_days_from_the_start_are_assessed(day: date, counts: bool) -> None:
    assert assessed(QUOTA, day) is counts


def test_every_day_counts_when_the_quota_is_not_for_working_days_only() -> None:
    every_day = dataclasses.replace(QUOTA, workdays=None)
    assert assessed(every_day, date(2026, 10, 3))
    assert not assessed(every_day, date(2026, 9, 30))


def test_an_effective_call_is_answered_and_long_enough() -> None:
    start = local(2026, 10, 12, 9)
    assert is_effective(call("zhang-wei", start, 30), QUOTA)
    assert is_effective(call("zhang-wei", start, 600), QUOTA)
    assert not is_effective(call("zhang-wei", start, 29.9), QUOTA)
    assert not is_effective(call("zhang-wei", start, None), QUOTA)
    inbound = dataclasses.replace(call("zhang-wei", start, 60), direction="inbound")
    assert not is_effective(inbound, QUOTA)
    assert count_effective([call("a", start, 40), call("a", start, 3)], QUOTA) == 1


def test_a_day_is_due_once_it_is_over_and_settled() -> None:
    settle = timedelta(hours=1)
    due = days_due(QUOTA, now=local(2026, 10, 13, 0, 59), timezone=SHANGHAI, settle=settle,
                   look_back=4)  # fmt: skip
    assert due == [date(2026, 10, 9), date(2026, 10, 10)]  # 11th is a Sunday
    due = days_due(QUOTA, now=local(2026, 10, 13, 1, 0), timezone=SHANGHAI, settle=settle,
                   look_back=4)  # fmt: skip
    assert due == [date(2026, 10, 9), date(2026, 10, 10), date(2026, 10, 12)]
    due = days_due(QUOTA, now=local(2026, 10, 13, 1, 0), timezone=SHANGHAI, settle=settle,
                   look_back=2)  # fmt: skip
    assert due == [date(2026, 10, 12)]
    assert days_due(QUOTA, now=local(2026, 10, 2, 9), timezone=SHANGHAI, settle=settle,
                    look_back=7) == []  # fmt: skip


def test_a_short_day_is_one_offence_priced_per_missing_call() -> None:
    result = quota_day(POLICY, QUOTA, "zhang-wei", date(2026, 10, 20), effective=95)
    assert (result.required, result.missing) == (120, 25)
    draft = quota_offence(POLICY, QUOTA, result)
    assert draft is not None
    assert draft.key == "reference:QU-1:zhang-wei:2026-10-20"
    assert draft.rule_id == "QU-1"
    assert draft.units == 25
    assert draft.person_name == "张伟"
    assert draft.department == "工程部"
    assert draft.extension == "2003"
    assert draft.call is None
    assert draft.at == local(2026, 10, 20, 23, 59, 59)
    assert draft.detail_zh == "2026-10-20 有效电话 95 个，定额 120 个，少 25 个"
    penalty = POLICY.rules["QU-1"].penalty
    assert penalty is not None
    assert assess(penalty, prior_offences=4, units=draft.units).amount == Decimal("125.00")


def test_a_day_that_met_its_quota_is_no_offence() -> None:
    result = quota_day(POLICY, QUOTA, "zhang-wei", date(2026, 10, 9), effective=85)
    assert result.missing == 0
    assert quota_offence(POLICY, QUOTA, result) is None


# -- the policy file ------------------------------------------------------------------------


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "site.toml"
    path.write_text(f'schema = 1\nextends = "reference-site"\n{text}', encoding="utf-8")
    return path


def test_the_policy_names_the_people_and_what_makes_a_call_effective(tmp_path: Path) -> None:
    policy = load_policy(
        write(
            tmp_path,
            '[telesales]\npeople = ["zhang-wei"]\nstarts = 2026-11-01\nmin_talk_seconds = 20\n'
            "working_days_only = false\n",
        )
    ).policy
    assert policy.telesales == Telesales(
        people=("zhang-wei",),
        starts=date(2026, 11, 1),
        min_talk=timedelta(seconds=20),
        workdays=None,
    )
    assert load_policy(REFERENCE_SITE).policy.telesales is None


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('[telesales]\npeople = ["nobody"]\nstarts = 2026-11-01\n', "no person named 'nobody'"),
        ('[telesales]\npeople = ["zhang-wei"]\n', "telesales.starts"),
        (
            '[telesales]\npeople = ["zhang-wei"]\nstarts = 2026-11-01\nrule = "QU-9"\n',
            "no rule named 'QU-9'",
        ),
    ],
)
def test_a_wrong_quota_names_its_line(tmp_path: Path, text: str, problem: str) -> None:
    with pytest.raises(PolicyError, match=problem) as raised:
        load_policy(write(tmp_path, text))
    assert "site.toml:" in str(raised.value)


# -- the daily job, over hand-written fakes -------------------------------------------------


class Calls:
    def __init__(self, calls: Sequence[CallSummary]) -> None:
        self.calls = list(calls)
        self.queries = 0

    def iter_calls(
        self,
        *,
        person: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        site: str | None = None,
    ) -> Iterator[CallSummary]:
        self.queries += 1
        for found in self.calls:
            if person is not None and found.person_id != person:
                continue
            if start is not None and found.started_at < start:
                continue
            if end is not None and found.started_at >= end:
                continue
            yield found


class Offences:
    def __init__(self) -> None:
        self.keys: list[str] = []

    def iter_offences(self, where: OffenceFilter) -> Iterator[OffenceEntry]:
        assert where.rule == "QU-1"
        return iter(())


class Clock:
    def __init__(self, now: datetime) -> None:
        self.at = now

    def now(self) -> datetime:
        return self.at


def watch(calls: Calls, policy: Policy, clock: Clock, pending: list[int]) -> tuple[
    QuotaWatch, list[OffenceDraft]
]:  # fmt: skip
    emitted: list[OffenceDraft] = []

    def emit(effects: Sequence[Effect]) -> None:
        emitted.extend(e.draft for e in effects if isinstance(e, RecordOffence))

    job = QuotaWatch(
        calls, Offences(), emit, lambda: policy, clock, journal_pending=lambda: pending[0]
    )
    return job, emitted


def test_the_daily_job_records_each_short_day_once() -> None:
    policy = dataclasses.replace(
        POLICY, telesales=dataclasses.replace(QUOTA, starts=date(2026, 10, 20))
    )
    day = local(2026, 10, 20, 10)
    made = [call("zhang-wei", day + timedelta(minutes=i), 45, i) for i in range(118)]
    made += [call("zhang-wei", day, 10, 500)]  # too short
    made += [call("staff-2002", day + timedelta(minutes=i), 45, 600 + i) for i in range(121)]
    calls = Calls(made)
    clock = Clock(local(2026, 10, 21, 0, 30))
    pending = [0]
    job, emitted = watch(calls, policy, clock, pending)

    async def scenario() -> None:
        assert await job.check_once() == []  # not settled yet
        clock.at = local(2026, 10, 21, 2, 0)
        pending[0] = 3
        assert await job.check_once() == []  # facts still on their way to the ledger
        pending[0] = 0
        new = await job.check_once()
        assert [(d.person_id, d.units) for d in new] == [("zhang-wei", 2)]
        queries = calls.queries
        assert await job.check_once() == []
        assert calls.queries == queries  # assessed days are not counted again

    asyncio.run(scenario())
    assert [d.key for d in emitted] == ["reference:QU-1:zhang-wei:2026-10-20"]


def test_the_report_of_a_day_lists_everyone_met_or_not() -> None:
    day = local(2026, 10, 20, 10)
    calls = Calls([call("zhang-wei", day + timedelta(minutes=i), 45, i) for i in range(3)])
    lines = quota_for_day(POLICY, date(2026, 10, 20), calls=calls, offences=Offences())
    assert [(ln.result.person_id, ln.result.effective, ln.result.missing) for ln in lines] == [
        ("zhang-wei", 3, 117),
        ("staff-2002", 0, 120),
    ]
    assert all(ln.assessed and not ln.recorded for ln in lines)
    with pytest.raises(RequestError, match="telesales"):
        quota_for_day(BASE, date(2026, 10, 12), calls=calls, offences=Offences())
