"""The do-not-disturb list on disk, and DND-1 on both layers of a running guard.

The list is a real memory-mapped file built by the import; the guard runs against the
simulated PBX (张伟's phone 2003 calling 02112345678, recorded) and answers a real FastAGI
client. A new list imported while the guard runs is taken up without a restart.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from pbxguard.adapters import dnd_file
from pbxguard.adapters.dnd_file import DndStore, NumberFile
from pbxguard.adapters.policy_file import LoadedPolicy
from pbxguard.adapters.settings import DndSettings
from pbxguard.domain.policy import Line, Mode
from pbxguard.domain.records import Outcome
from pbxguard.errors import ConfigError
from tests.support.agi_client import agi_request
from tests.support.guard import guard_against, reference_policy, until

NOW = datetime(2026, 12, 10, 2, 15, tzinfo=UTC)
POLICY = reference_policy().policy
PBXGUARD = Path(sys.executable).with_name("pbxguard")
# chinese-caller-name-local: 2003 (张伟) dials 02112345678, a local number; answered.
LOCAL_TRUNK = "Local/02112345678@pstn-00000006;1"


def store_with(directory: Path, lines: list[str], **options: bool) -> DndStore:
    store = DndStore(directory)
    report = store.import_lines(lines, POLICY.classifier, now=NOW, **options)
    assert report.info is not None, report.problems
    return store


def promotion_on_2003(mode: Mode = Mode.ENFORCE) -> LoadedPolicy:
    loaded = reference_policy(mode)
    policy = loaded.policy
    lines = {**policy.lines, "2003": Line("2003", "推销线路", promotion=True)}
    return dataclasses.replace(loaded, policy=dataclasses.replace(policy, lines=lines))


# -- the file ---------------------------------------------------------------------------------


def test_an_import_is_searched_in_the_canonical_form(tmp_path: Path) -> None:
    store = store_with(
        tmp_path,
        ["13800138000", "+86 138 0013 8001", "021-6234 5678", "# a comment", "", "62345679,张三"],
    )
    numbers = store.open_current()
    assert numbers is not None
    try:
        assert len(numbers) == 4
        for listed in ("13800138000", "13800138001", "02162345678", "02162345679"):
            assert listed in numbers
        for unlisted in ("13800138002", "62345678", "2162345678", "", "abc"):
            assert unlisted not in numbers
        assert 12345 not in numbers
    finally:
        numbers.close()


def test_numbers_are_sorted_and_unique_across_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Runs of three numbers force an external merge; repeats across runs are kept once."""
    monkeypatch.setattr(dnd_file, "RUN_SIZE", 3)
    written = [f"1380013{n:04d}" for n in (9, 1, 5, 1, 7, 3, 9, 2, 8, 5, 0)]
    store = store_with(tmp_path, written)
    numbers = store.open_current()
    assert numbers is not None
    try:
        assert len(numbers) == len(set(written))
        assert all(w in numbers for w in written)
        assert "13800134444" not in numbers
    finally:
        numbers.close()
    data = (tmp_path / numbers.info.name).read_bytes()[dnd_file.HEADER_SIZE :]
    values = list(memoryview(data).cast("Q"))
    assert values == sorted(set(values))
    assert not list(tmp_path.glob(".run-*"))


def test_a_file_with_bad_lines_changes_nothing_unless_told_to_skip_them(tmp_path: Path) -> None:
    store = store_with(tmp_path, ["13800138000"])
    before = store.current_path()
    report = store.import_lines(
        ["13900139000", "not a number", "110", "13900139001"], POLICY.classifier, now=NOW
    )
    assert report.info is None
    assert report.invalid == 2
    assert [(line, text) for line, text, _ in report.problems] == [
        (2, "not a number"),
        (3, "110"),
    ]
    assert "emergency" in report.problems[1][2]
    assert store.current_path() == before
    skipped = store.import_lines(
        ["13900139000", "not a number", "110", "13900139001"],
        POLICY.classifier,
        now=NOW,
        skip_invalid=True,
    )
    assert skipped.info is not None
    assert skipped.unique == 2


def test_a_new_version_replaces_the_old_one_whole(tmp_path: Path) -> None:
    store = store_with(tmp_path, ["13800138000"])
    old = store.open_current()
    assert old is not None
    stamp = store.stamp()
    store_with(tmp_path, ["13900139000"])
    new = store.open_current()
    assert new is not None
    try:
        assert store.stamp() != stamp
        # The old mapping keeps answering (a daemon still searching it) after its file is gone.
        assert not (tmp_path / old.info.name).exists()
        assert "13800138000" in old
        assert "13800138000" not in new
        assert "13900139000" in new
        assert [p.name for p in tmp_path.glob("dnd-*.bin")] == [new.info.name]
    finally:
        old.close()
        new.close()


def test_a_damaged_list_is_refused_with_its_name(tmp_path: Path) -> None:
    store = store_with(tmp_path, ["13800138000", "13800138001"])
    path = store.current_path()
    assert path is not None
    with path.open("r+b") as damaged:
        damaged.truncate(dnd_file.HEADER_SIZE + 8)
    with pytest.raises(ConfigError, match="damaged"):
        NumberFile(path)
    path.write_bytes(b"x" * 100)
    with pytest.raises(ConfigError, match="not a do-not-disturb list"):
        NumberFile(path)
    (tmp_path / "CURRENT").write_text("../../etc/passwd\n")
    with pytest.raises(ConfigError, match="names no do-not-disturb list"):
        store.current_path()


def test_no_list_yet_means_none(tmp_path: Path) -> None:
    assert DndStore(tmp_path / "nothing").open_current() is None
    assert DndStore(tmp_path / "nothing").stamp() is None


# -- the command ------------------------------------------------------------------------------


def test_the_command_imports_looks_up_and_refuses_bad_files(tmp_path: Path) -> None:
    settings = tmp_path / "pbxguard.toml"
    settings.write_text(f'state_dir = "{tmp_path / "state"}"\n', encoding="utf-8")
    source = tmp_path / "dnd.csv"
    source.write_text("号码,姓名\n13800138000,张三\n+86 139 0013 9000,李四\n", encoding="utf-8")

    def pbxguard(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(PBXGUARD), *args, "--config", str(settings)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    refused = pbxguard("dnd", "import", str(source))
    assert refused.returncode == 3
    assert f"{source}:1: '号码'" in refused.stderr
    assert "nothing was changed" in refused.stderr
    assert "没有免打扰名单" in pbxguard("dnd", "status").stdout

    imported = pbxguard("dnd", "import", str(source), "--skip-invalid")
    assert imported.returncode == 0, imported.stderr
    assert "2 个不重复 unique" in imported.stdout
    status = pbxguard("dnd", "status")
    assert "2 个号码 numbers" in status.stdout
    found = pbxguard("dnd", "lookup", "139-0013-9000")
    assert (found.returncode, found.stdout.strip()) == (
        0,
        "13900139000: 在免打扰名单中 on the do-not-disturb list",
    )
    assert pbxguard("dnd", "lookup", "13900139001").returncode == 1
    assert pbxguard("dnd", "import", str(tmp_path / "missing.txt")).returncode == 3


# -- both layers of a running guard -----------------------------------------------------------


async def test_the_safety_net_cuts_a_promotion_call_to_a_listed_number(tmp_path: Path) -> None:
    dnd = tmp_path / "dnd"
    store_with(dnd, ["02112345678"])
    async with guard_against(
        ["chinese-caller-name-local"],
        tmp_path,
        loaded=promotion_on_2003(),
        dnd=DndSettings(dir=str(dnd)),
    ) as run:
        await run.settle()
        offences = await run.offences()
        [call] = await run.calls()
    assert run.hangups() == [LOCAL_TRUNK]
    [offence] = offences
    assert (offence.rule_id, offence.person_id, offence.amount) == (
        "DND-1",
        "zhang-wei",
        Decimal("0.00"),
    )
    assert offence.final_outcome is Outcome.HUNG_UP
    assert offence.citation == "004 line 12"
    assert call.rule_id == "DND-1"


async def test_fastagi_refuses_before_ringing_and_takes_up_a_new_list(tmp_path: Path) -> None:
    dnd = tmp_path / "dnd"
    store = store_with(dnd, ["02112345678", "13800138000"])
    async with guard_against(
        [],
        tmp_path,
        loaded=promotion_on_2003(),
        dnd=DndSettings(dir=str(dnd), check_interval=0.05),
    ) as run:
        assert run.parts.agi is not None
        host, port = run.parts.agi.address

        async def verdict(caller: str, number: str, uniqueid: str) -> tuple[str | None, str]:
            result = await agi_request(
                host,
                port,
                callerid=caller,
                extension=number,
                args=(caller, number, uniqueid),
                uniqueid=uniqueid,
            )
            return result.verdict, result.variables.get("PBXGUARD_RULE", "")

        assert await verdict("2003", "021-1234 5678", "1.1") == ("deny", "DND-1")
        assert await verdict("2003", "+8613800138000", "1.2") == ("deny", "DND-1")
        assert await verdict("2002", "02112345678", "1.3") == ("allow", "")
        assert await verdict("2003", "13800138001", "1.4") == ("allow", "")
        assert await verdict("2003", "110", "1.5") == ("allow", "")

        store_with(dnd, ["13800138001"])
        await until(lambda: run.daemon.dnd_reloads >= 1, within=10)
        assert await verdict("2003", "02112345678", "1.6") == ("allow", "")
        assert await verdict("2003", "13800138001", "1.7") == ("deny", "DND-1")
        await run.written()
        offences = await run.offences()
    assert [(o.rule_id, o.number, o.final_outcome) for o in offences] == [
        ("DND-1", "02112345678", Outcome.REFUSED),
        # +86 folds to a domestic number with its trunk 0, as the classifier records it.
        ("DND-1", "013800138000", Outcome.REFUSED),
        ("DND-1", "13800138001", Outcome.REFUSED),
    ]
    assert store.current_path() is not None
