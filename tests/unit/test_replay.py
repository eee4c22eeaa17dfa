"""What if: recorded calls judged again under a candidate policy, over a hand-written ledger."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from pbxguard.adapters.policy_file import load_policy
from pbxguard.app.replay import WhatIf
from pbxguard.domain.approvals import Approval
from pbxguard.domain.numbers import NumberClass
from pbxguard.domain.policy import Line, Mode, Policy, Role
from pbxguard.domain.replay import Change, RecordedCall

SHANGHAI = ZoneInfo("Asia/Shanghai")
REFERENCE_SITE = Path(__file__).parents[2] / "src/pbxguard/policies/reference-site.toml"
CURRENT = load_policy(REFERENCE_SITE).policy


def at(day: int, hour: int = 10, minute: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, minute, tzinfo=SHANGHAI)


def recorded(
    when: datetime,
    extension: str,
    number: str,
    number_class: str,
    *,
    verdict: str = "allow",
    rule: str = "",
    fine: str = "0.00",
    talk: float = 0,
    person: str = "",
    department: str = "工程部",
) -> RecordedCall:
    return RecordedCall(
        at=when,
        linkedid=f"{when.timestamp()}",
        extension=extension,
        person_id=person,
        department=department,
        dialled=number,
        number=number,
        number_class=number_class,
        verdict=verdict,
        rule_id=rule,
        fine=Decimal(fine),
        talk_time=timedelta(seconds=talk),
    )


class Ledger:
    """A hand-written ledger: the calls of a month, offences before it, approvals."""

    def __init__(
        self,
        calls: list[RecordedCall],
        *,
        priors: dict[tuple[str, str], int] | None = None,
        approvals: list[Approval] | None = None,
    ) -> None:
        self.calls = calls
        self.priors = priors or {}
        self.approvals = approvals or []
        self.prior_questions: list[tuple[str, str, datetime | None, datetime]] = []

    def iter_recorded(self, start: datetime, end: datetime, *, site: str) -> Iterator[RecordedCall]:
        assert site == "reference"
        return iter([c for c in self.calls if start <= c.at < end])

    def prior_offences(
        self,
        *,
        person_id: str,
        extension: str,
        ladder: str,
        since: datetime | None,
        until: datetime,
    ) -> int:
        self.prior_questions.append((person_id, ladder, since, until))
        return self.priors.get((person_id, ladder), 0)

    def approvals_granted(self, site: str) -> list[Approval]:
        return self.approvals


def staff_may(*classes: NumberClass) -> Policy:
    staff = CURRENT.roles["staff"]
    roles = {
        **CURRENT.roles,
        "staff": dataclasses.replace(staff, allowed=staff.allowed | set(classes)),
    }
    return dataclasses.replace(CURRENT, roles=roles)


def test_the_same_policy_changes_nothing_and_sums_the_fines() -> None:
    ledger = Ledger(
        [
            recorded(at(2), "2001", "00441632960123", "international", verdict="deny",
                     rule="LD-2", fine="500.00", person="staff-2001"),
            recorded(at(3), "2001", "01087654321", "domestic_ld", verdict="deny", rule="LD-2",
                     fine="50.00", person="staff-2001"),
            recorded(at(3, 11), "2003", "02112345678", "local", talk=30, person="zhang-wei"),
        ]
    )  # fmt: skip
    replay = WhatIf(CURRENT, ledger, month="2026-11")
    assert list(replay.changes()) == []
    assert replay.tally.calls == 3
    assert replay.tally.fines_before == replay.tally.fines_after == Decimal("550.00")
    # LD-2 counts per quarter: the offences of October were asked for once, up to November.
    [(person, ladder, since, until)] = ledger.prior_questions
    assert (person, ladder) == ("staff-2001", "LD-2")
    assert since == datetime(2026, 10, 1, tzinfo=SHANGHAI)
    assert until == datetime(2026, 11, 1, tzinfo=SHANGHAI)


def test_allowing_international_calls_shows_them_allowed_and_their_fines_gone() -> None:
    ledger = Ledger(
        [
            recorded(at(2), "2001", "00441632960123", "international", verdict="deny",
                     rule="LD-2", fine="500.00", person="staff-2001"),
            recorded(at(3), "2002", "16812345678", "premium", verdict="deny", rule="PR-1",
                     fine="50.00", person="staff-2002"),
        ]
    )  # fmt: skip
    replay = WhatIf(staff_may(NumberClass.INTERNATIONAL), ledger, month="2026-11")
    [change] = list(replay.changes())
    assert change.change is Change.NOW_ALLOWED
    assert (change.call.number, change.fine, change.delta) == (
        "00441632960123",
        Decimal("0.00"),
        Decimal("-500.00"),
    )
    rows = {(r.rule_id, r.department): r for r in replay.tally.rows()}
    assert rows[("LD-2", "工程部")].now_allowed == 1
    assert rows[("LD-2", "工程部")].delta == Decimal("-500.00")
    assert rows[("PR-1", "工程部")].delta == Decimal("0.00")
    assert replay.tally.fines_after == Decimal("50.00")


def test_a_new_restriction_shows_the_calls_it_would_refuse() -> None:
    staff = CURRENT.roles["staff"]
    no_mobiles = dataclasses.replace(
        CURRENT,
        roles={
            **CURRENT.roles,
            "staff": Role(
                staff.id,
                staff.name_zh,
                staff.name_en,
                staff.allowed - {NumberClass.MOBILE},
            ),
        },
        class_rules={**CURRENT.class_rules, NumberClass.MOBILE: "PV-5"},
    )
    with pytest.raises(KeyError):
        no_mobiles.rules["PV-5"]
    ledger = Ledger([recorded(at(5), "2003", "13800138000", "mobile", talk=60)])
    [change] = list(WhatIf(no_mobiles, ledger, month="2026-11").changes())
    assert change.change is Change.NOW_REFUSED
    assert change.verdict == "deny"
    assert change.fine == Decimal("0.00")  # a rule the policy does not define costs nothing


def test_a_dearer_ladder_is_priced_from_the_offences_before_the_month() -> None:
    ledger = Ledger(
        [
            recorded(at(2), "2001", "01087654321", "domestic_ld", verdict="deny", rule="LD-2",
                     fine="50.00", person="staff-2001"),
            recorded(at(4), "2001", "01087654322", "domestic_ld", verdict="deny", rule="LD-2",
                     fine="50.00", person="staff-2001"),
        ],
        priors={("staff-2001", "LD-2"): 1},
    )  # fmt: skip
    ld2 = CURRENT.rules["LD-2"]
    assert ld2.penalty is not None
    ladder = dataclasses.replace(
        ld2.penalty,
        steps=(
            dataclasses.replace(ld2.penalty.steps[0], per_class={"domestic_ld": Decimal(50)}),
            dataclasses.replace(ld2.penalty.steps[0], per_class={"domestic_ld": Decimal(200)}),
        ),
    )
    candidate = dataclasses.replace(
        CURRENT, rules={**CURRENT.rules, "LD-2": dataclasses.replace(ld2, penalty=ladder)}
    )
    changes = list(WhatIf(candidate, ledger, month="2026-11").changes())
    # One offence in October: both November calls are second (or later) offences.
    assert [(c.change, c.fine) for c in changes] == [
        (Change.FINE_CHANGED, Decimal("200.00")),
        (Change.FINE_CHANGED, Decimal("200.00")),
    ]


def test_charges_follow_the_candidate_tariff_and_stopped_calls_cost_nothing() -> None:
    premium_answered = recorded(
        at(6), "2002", "16812345678", "premium", verdict="deny", rule="PR-1",
        fine="90.00", talk=50, person="staff-2002",
    )  # fmt: skip
    monitor = dataclasses.replace(CURRENT, mode=Mode.MONITOR)
    ledger = Ledger([premium_answered])
    assert list(WhatIf(monitor, ledger, month="2026-11").changes()) == []
    # Allowed at the time (say, by an older policy), refused now in enforce mode: no talk.
    allowed_then = dataclasses.replace(premium_answered, verdict="allow", rule_id="", fine=ZERO)
    [change] = list(WhatIf(CURRENT, Ledger([allowed_then]), month="2026-11").changes())
    assert (change.change, change.fine) == (Change.NOW_REFUSED, Decimal("50.00"))
    [change] = list(WhatIf(monitor, Ledger([allowed_then]), month="2026-11").changes())
    assert (change.change, change.fine) == (Change.NOW_REFUSED, Decimal("90.00"))


def test_approvals_count_their_calls_in_the_order_of_the_month() -> None:
    approval = Approval(
        id="a1",
        person_id="staff-2001",
        granted_by="head-9001",
        valid_from=at(1, 0),
        valid_until=at(30, 0),
        number_class=NumberClass.DOMESTIC_LD,
        max_calls=1,
    )
    ledger = Ledger(
        [
            recorded(at(2), "2001", "01087654321", "domestic_ld", person="staff-2001"),
            recorded(at(3), "2001", "01087654321", "domestic_ld", verdict="deny", rule="LD-2",
                     fine="50.00", person="staff-2001"),
        ],
        approvals=[approval],
    )  # fmt: skip
    assert list(WhatIf(CURRENT, ledger, month="2026-11").changes()) == []


def test_a_promotion_line_and_a_list_refuse_what_went_through() -> None:
    promotion = dataclasses.replace(
        CURRENT, lines={**CURRENT.lines, "2003": Line("2003", "推销", promotion=True)}
    )
    ledger = Ledger(
        [
            recorded(at(9), "2003", "02112345678", "local", talk=20, person="zhang-wei"),
            recorded(at(9, 11), "2003", "02112345679", "local", talk=20, person="zhang-wei"),
        ]
    )
    replay = WhatIf(promotion, ledger, month="2026-11", dnd=frozenset({"02112345678"}))
    [change] = list(replay.changes())
    assert (change.change, change.rule_id, change.department) == (
        Change.NOW_REFUSED,
        "DND-1",
        "工程部",
    )
    [row] = list(replay.tally.rows())
    assert (row.rule_id, row.now_refused) == ("DND-1", 1)


def test_calls_outside_the_month_are_not_replayed() -> None:
    ledger = Ledger([recorded(datetime(2026, 10, 31, 23, 59, tzinfo=SHANGHAI), "2001", "1", "x")])
    assert WhatIf(CURRENT, ledger, month="2026-11").run().calls == 0


ZERO = Decimal("0.00")
