"""`pbxguard init DIR` writes the sample site, which loads, and never overwrites by surprise."""

from __future__ import annotations

from pathlib import Path

import pytest

from pbxguard.adapters.policy_file import load_policy
from pbxguard.adapters.settings import load_settings
from pbxguard.entrypoints.cli import main
from pbxguard.entrypoints.cli.init import FILES

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "src" / "pbxguard" / "site_template"


def test_the_template_is_the_sample_site_of_the_repository() -> None:
    """examples/site/ (mounted by the compose stack, used by the README) is what init writes."""
    for name in FILES:
        assert (TEMPLATE / name).read_bytes() == (ROOT / "examples" / "site" / name).read_bytes()


def test_init_writes_a_site_that_loads(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "etc" / "pbxguard"
    assert main(["init", str(target), "--site", "beijing-hq"]) == 0
    out = capsys.readouterr().out
    assert "已创建 written" in out
    assert f"pbxguard run --config {target / 'pbxguard.toml'}" in out
    assert sorted(p.name for p in target.iterdir()) == sorted(FILES)
    loaded = load_policy(target / "site-policy.toml")
    assert loaded.policy.site == "beijing-hq"
    assert loaded.rota_file == target / "rota.csv"
    settings = load_settings(target / "pbxguard.toml")
    assert settings.policy == str(target / "site-policy.toml")
    # The settings name no secret: it comes from the environment.
    assert settings.ami.secret.get_secret_value() == ""


def test_init_refuses_to_overwrite_unless_forced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "rota.csv").write_text("line,person,weekday,start,end\n", encoding="utf-8")
    assert main(["init", str(tmp_path)]) == 3
    err = capsys.readouterr().err
    assert "文件已存在" in err
    assert "--force" in err
    assert not (tmp_path / "pbxguard.toml").exists()  # nothing written
    assert main(["init", str(tmp_path), "--force"]) == 0
    assert (tmp_path / "rota.csv").read_bytes() == (TEMPLATE / "rota.csv").read_bytes()


def test_init_refuses_a_site_name_that_cannot_be_a_topic(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["init", str(tmp_path), "--site", "HQ/#"]) == 3
    assert "站点名无效" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
