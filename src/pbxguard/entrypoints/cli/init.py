"""``pbxguard init DIR``: the files a new site needs, ready to adapt."""

from __future__ import annotations

import argparse
import re
from importlib import resources
from pathlib import Path

from pbxguard.adapters.policy_file import load_policy
from pbxguard.errors import ConfigError

FILES = ("pbxguard.toml", "site-policy.toml", "rota.csv")
_SITE_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")


def cmd_init(args: argparse.Namespace) -> int:
    """Write the sample site into ``args.directory``; refuse to overwrite unless forced."""
    target = Path(args.directory)
    site = args.site
    if site is not None and not _SITE_NAME.fullmatch(site):
        raise ConfigError(
            f"站点名无效 — invalid site name {site!r}: lower-case letters, digits, '-' and '_', "
            "starting with a letter or digit (it becomes part of MQTT topics and ledger rows)"
        )
    existing = [name for name in FILES if (target / name).exists()]
    if existing and not args.force:
        raise ConfigError(
            f"文件已存在 — {', '.join(str(target / n) for n in existing)} already exist: "
            "nothing written (use --force to overwrite)"
        )
    try:
        target.mkdir(parents=True, exist_ok=True)
        template = resources.files("pbxguard.site_template")
        for name in FILES:
            # As bytes: the files keep their line endings (the rota is CSV, CRLF).
            data = template.joinpath(name).read_bytes()
            if name == "site-policy.toml" and site is not None:
                data = data.replace(b'name = "example"', f'name = "{site}"'.encode(), 1)
            (target / name).write_bytes(data)
    except OSError as exc:
        raise ConfigError(f"无法写入 — cannot write {target}: {exc.strerror}") from exc
    # What was written must load: the same check as `pbxguard policy validate`.
    loaded = load_policy(target / "site-policy.toml")
    print(f"已创建 written: {', '.join(str(target / n) for n in FILES)}")
    print(f"  站点 site {loaded.policy.site} · 模式 mode {loaded.policy.mode.value}")
    print("下一步 next:")
    print(f"  1. 编辑人员、线路和值班表 edit the people, lines and rota in {target}")
    print(f"  2. pbxguard policy validate {target / 'site-policy.toml'}")
    print("  3. 设置 set PBXGUARD_AMI__SECRET (the [pbxguard] secret of manager.conf)")
    print(f"  4. pbxguard run --config {target / 'pbxguard.toml'}")
    return 0
