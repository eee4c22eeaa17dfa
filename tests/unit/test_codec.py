"""Facts as JSON: what `from_data` accepts, fills in and refuses, whatever the record."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from pbxguard.adapters.codec import from_data, to_data
from pbxguard.domain.records import (
    CallRef,
    CallSummary,
    CodeFailure,
    Ending,
    OffenceDraft,
    OffenceOutcome,
    Outcome,
)

AT = datetime(2026, 11, 23, 1, 0, tzinfo=UTC)


def draft() -> OffenceDraft:
    return OffenceDraft(
        key="hq:L1:LD-2:00441632960123",
        rule_id="LD-2",
        at=AT,
        call=CallRef("L1", "L1", "PJSIP/2001-00000001"),
        extension="2001",
        person_id="p-zhang",
        person_name="张三",
        department="工程部",
        charge=Decimal("1.50"),
        talk_time=timedelta(seconds=3, microseconds=7),
        outcome=Outcome.REFUSED,
    )


def test_a_record_and_its_nested_values_round_trip_through_json() -> None:
    record = draft()
    data = json.loads(json.dumps(to_data(record)))
    assert data["call"] == {"linkedid": "L1", "uniqueid": "L1", "channel": "PJSIP/2001-00000001"}
    assert data["charge"] == "1.50"
    assert data["talk_time"] == 3_000_007
    assert data["outcome"] == "refused"
    assert from_data(OffenceDraft, data) == record


def test_fields_left_out_take_their_defaults_and_none_stays_none() -> None:
    data = {"key": "k", "at": AT.isoformat(), "ending": "before_answer"}
    assert from_data(OffenceOutcome, data) == OffenceOutcome("k", AT, Ending.BEFORE_ANSWER)
    failure = {
        "key": "k",
        "at": AT.isoformat(),
        "extension": "2001",
        "person_id": "",
        "call": None,
    }
    assert from_data(CodeFailure, failure).call is None


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        (lambda d: d.pop("extension"), "extension"),
        (lambda d: d.update(extension=2001), "expected str"),
        (lambda d: d.update(outcome="vanished"), "vanished"),
        (lambda d: d.update(at="2026-11-23T01:00:00"), "offset"),
        (lambda d: d.update(call={"linkedid": "L1"}), "uniqueid"),
        (lambda d: d.update(charge="1.5.0"), "OffenceDraft"),
    ],
)
def test_data_that_does_not_fit_the_record_is_refused_with_a_reason(
    change: object, complaint: str
) -> None:
    data = to_data(draft())
    change(data)  # type: ignore[operator]
    with pytest.raises(ValueError, match=complaint):
        from_data(OffenceDraft, data)


def test_an_optional_datetime_and_money_decode_exactly() -> None:
    summary = CallSummary(
        call=CallRef("L2", "U2", "PJSIP/2002-00000002"),
        extension="2002",
        person_id="p-li",
        person_name="李四",
        department="工程部",
        caller_name="李四",
        dialled="01087654321",
        number="01087654321",
        number_class="domestic_ld",
        direction="outbound",
        started_at=AT,
        answered_at=None,
        ended_at=AT + timedelta(seconds=20),
        verdict="allow",
        rule_id="",
        outcome="unanswered",
        charge=Decimal("0.70"),
    )
    back = from_data(CallSummary, json.loads(json.dumps(to_data(summary))))
    assert back == summary
    assert back.answered_at is None
    assert back.charge == Decimal("0.70")
