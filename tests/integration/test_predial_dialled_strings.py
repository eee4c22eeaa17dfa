"""Dialled strings with *, # and Unicode digits, asked over FastAGI as Asterisk asks.

Each of these once got ``allow`` as a "feature code", and the sample dialplan's ``_[+0-9].``
then dialled it on the trunk, where a gateway drops the ``#`` and completes the call.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pbxguard.domain.records import Outcome
from tests.integration.test_predial import (
    MONDAY_10AM,
    FakeClock,
    check_json,
    running_service,
    same_verdict,
)

# (extension, dialled, verdict, rule, class) at the reference site.
CASES = [
    ("2001", "00441632960123#", "deny", "LD-2", "international"),
    ("2001", "16812345678#", "deny", "PR-1", "premium"),
    ("2001", "0044*1632960123", "deny", "", "invalid"),
    ("9001", "0044*1632960123", "deny", "", "invalid"),  # a head may dial international
    ("2001", "*7200441632960123", "deny", "", "invalid"),
    ("2001", "0044\u200b1632960123", "deny", "LD-2", "international"),
    ("2001", "13800138000p00441632960123", "deny", "", "invalid"),
    ("2001", "１１０", "allow", "", "emergency"),
    ("8000", "110#", "allow", "", "emergency"),  # the guard-room alarm phone
    ("2001", "*97", "allow", "", "feature"),
    ("2001", "*97#", "allow", "", "feature"),
    ("2001", "13800138000#", "allow", "", "mobile"),
]


async def test_the_gate_refuses_numbers_hidden_behind_star_and_hash(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with running_service(tmp_path, FakeClock(MONDAY_10AM)) as run:
        answers = [await run.ask(extension, dialled) for extension, dialled, *_ in CASES]
        await run.settled()
        decisions = run.calls.decisions()
        offences = run.offences.offences()

    capsys.readouterr()  # the service's logs
    for (extension, dialled, verdict, rule, number_class), answer in zip(
        CASES, answers, strict=True
    ):
        assert answer.agistatus == "SUCCESS"
        assert (answer.verdict, answer.variables["PBXGUARD_RULE"]) == (verdict, rule), dialled
        data = check_json(extension, dialled, MONDAY_10AM, capsys)
        assert data["number_class"] == number_class, dialled
        assert same_verdict(answer, data), dialled

    refused = dict(zip([c[1] for c in CASES], answers, strict=True))
    assert "feature codes" in refused["0044*1632960123"].variables["PBXGUARD_REASON"]
    assert "功能码" in refused["0044*1632960123"].variables["PBXGUARD_REASON_ZH"]
    assert "pause" in refused["13800138000p00441632960123"].variables["PBXGUARD_REASON"]
    # The dialled string is recorded as it came; the refusals of real numbers are offences.
    assert [d.dialled for d in decisions] == [c[1] for c in CASES]
    assert sorted((o.extension, o.rule_id) for o in offences) == [
        ("2001", "LD-2"),
        ("2001", "LD-2"),
        ("2001", "PR-1"),
    ]
    assert {o.outcome for o in offences} == {Outcome.REFUSED}
