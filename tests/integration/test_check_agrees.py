"""`pbxguard check` and the running guard cannot disagree: one use case, the same inputs.

Every class of number, from every kind of phone, under every state an approval can be in
(none, active, for a prefix only, used up, revoked, expired, for another site, company-wide):
the FastAGI verdict of the daemon equals what ``pbxguard check --config`` prints, which reads
the same approvals from the same ledger.
"""

from __future__ import annotations

import argparse
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from pbxguard.domain.approvals import Approval
from pbxguard.domain.numbers import NumberClass
from pbxguard.domain.records import CallRef
from pbxguard.entrypoints.cli.check import cmd_check
from tests.integration.test_predial import (
    EXTENSIONS,
    MONDAY_10AM,
    REFERENCE_POLICY,
    FakeClock,
    running_service,
    same_verdict,
)

NUMBERS = {
    "110": NumberClass.EMERGENCY,
    "62345678": NumberClass.LOCAL,
    "13800138000": NumberClass.MOBILE,
    "01087654321": NumberClass.DOMESTIC_LD,
    "02787654321": NumberClass.DOMESTIC_LD,
    "0085223456789": NumberClass.HK_MACAU,
    "00441632960123": NumberClass.INTERNATIONAL,
    "0033123456789": NumberClass.INTERNATIONAL,
    "16812345678": NumberClass.PREMIUM,
}


def approvals() -> list[Approval]:
    """One approval in each state, for staff-2001 (2001), zhang-wei (2003) and head-9001."""
    start, end = MONDAY_10AM - timedelta(hours=1), MONDAY_10AM + timedelta(hours=8)

    def approval(approval_id: str, person: str, **fields: Any) -> Approval:
        values: dict[str, Any] = {
            "id": approval_id, "person_id": person, "granted_by": "head-9001",
            "valid_from": start, "valid_until": end, "reason": "与客户核对合同",
        }  # fmt: skip
        values.update(fields)
        return Approval(**values)

    return [
        # 2001: domestic long distance to Beijing (010) only; international used up.
        approval("a-prefix", "staff-2001", number_class=NumberClass.DOMESTIC_LD, prefix="010"),
        approval("a-used", "staff-2001", number_class=NumberClass.INTERNATIONAL, max_calls=1),
        # 2003: Hong Kong granted then revoked; international expired an hour ago.
        approval("a-revoked", "zhang-wei", number_class=NumberClass.HK_MACAU),
        approval(
            "a-expired",
            "zhang-wei",
            number_class=NumberClass.INTERNATIONAL,
            valid_from=start - timedelta(days=1),
            valid_until=start,
        ),
        # 2003: domestic long distance everywhere, company-wide (every site).
        approval("a-company", "zhang-wei", number_class=NumberClass.DOMESTIC_LD, site=""),
        # 9001: Hong Kong on another PBX only (does not count here).
        approval("a-elsewhere", "head-9001", number_class=NumberClass.HK_MACAU, site="beijing"),
    ]


def check_with_ledger(
    config: Path, extension: str, number: str, capsys: pytest.CaptureFixture[str]
) -> dict[str, Any]:
    args = argparse.Namespace(
        extension=extension,
        number=number,
        at=MONDAY_10AM.replace(tzinfo=None).isoformat(),
        config=str(config),
        policy=None,
        json=True,
    )
    cmd_check(args)
    data: dict[str, Any] = json.loads(capsys.readouterr().out)
    return data


async def test_check_and_the_daemon_agree_over_every_approval_state(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "pbxguard.toml"
    config.write_text(
        f'policy = "{REFERENCE_POLICY}"\nstate_dir = "{tmp_path / "state"}"\n'
        f'[ledger]\nurl = "sqlite:///{tmp_path / "ledger.sqlite3"}"\n',
        encoding="utf-8",
    )
    cases = [(ext, number) for ext in EXTENSIONS for number in NUMBERS]
    answers = {}
    async with running_service(tmp_path, FakeClock(MONDAY_10AM)) as run:
        for approval in approvals():
            run.approvals.grant(approval)
        run.approvals.use("a-used", CallRef("L-0", "U-0", "PJSIP/2001-0"), MONDAY_10AM)
        run.approvals.revoke("a-revoked", by="head-9001", at=MONDAY_10AM, reason="改期")
        await run.daemon.refresh_approvals()
        for extension, number in cases:
            answers[extension, number] = await run.ask(extension, number)
        await run.settled()
    capsys.readouterr()  # the service's logs

    by_approval: dict[str, list[tuple[str, str]]] = {}
    for (extension, number), answer in answers.items():
        data = check_with_ledger(config, extension, number, capsys)
        assert NumberClass(data["number_class"]) is NUMBERS[number], number
        assert same_verdict(answer, data), (extension, number, answer.variables, data)
        if data.get("approval"):
            by_approval.setdefault(data["approval"], []).append((extension, number))

    # The states did matter: only the live approvals allowed anything, each where it applies.
    assert by_approval == {
        "a-prefix": [("2001", "01087654321")],
        "a-company": [("2003", "01087654321"), ("2003", "02787654321")],
    }
    verdict = {case: answers[case].verdict for case in cases}
    assert verdict["2001", "02787654321"] == "deny"  # outside the prefix
    assert verdict["2001", "00441632960123"] == "deny"  # used up
    assert verdict["2003", "0085223456789"] == "deny"  # revoked
    assert verdict["2003", "0033123456789"] == "deny"  # expired
    assert verdict["2001", "110"] == verdict["8000", "110"] == "allow"
