"""The container files: both Dockerfiles and the compose stack, checked without a Docker daemon.

``docker-compose config`` (Debian's docker-compose, installed by .ci/run) validates and
resolves docker-compose.yml with the sample env file; the rules below read the resolved
configuration and the Dockerfiles: non-root users, pinned base images, a health check for
every service, state in volumes, no secret in any file. Building the images needs a Docker
daemon and a registry, which the test machine does not have (docs/deployment.md).
"""

from __future__ import annotations

import fnmatch
import json
import re
import secrets
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / "deploy" / "compose.env.example"
PBXGUARD_DOCKERFILE = ROOT / "Dockerfile"
ASTERISK_DOCKERFILE = ROOT / "deploy" / "asterisk" / "Dockerfile"
SECRET_VARIABLES = ("PBXGUARD_AMI_SECRET", "PBXGUARD_DB_PASSWORD")
STATE_DIR = "/var/lib/pbxguard"


# -- Dockerfiles -----------------------------------------------------------------------------


@dataclass
class Stage:
    """One FROM … stage of a Dockerfile: its base image and instructions, continuations joined."""

    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def values(self, keyword: str) -> list[str]:
        return [value for key, value in self.instructions if key == keyword]


def read_stages(path: Path) -> list[Stage]:
    """Parse a Dockerfile into stages (comment lines dropped, as Docker drops them)."""
    logical: list[str] = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, f"{path}: the last instruction ends with a continuation"
    stages: list[Stage] = []
    for line in logical:
        keyword, _, value = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            parts = value.split()
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(parts[0], name))
        else:
            assert stages, f"{path}: {keyword} before FROM"
            stages[-1].instructions.append((keyword, value.strip()))
    return stages


# Images whose two-number versions are releases (Debian 12.11, PostgreSQL 15.17); for the
# others (python:3.11) two numbers float over patch releases.
RELEASE_IS_TWO_NUMBERS = {"debian", "postgres"}


def is_pinned(image: str) -> bool:
    """Tell whether an image reference names one version: a digest, or an exact version tag."""
    if "@sha256:" in image:
        return True
    name, _, tag = image.rpartition(":")
    if not name or "/" in tag:
        return False  # no tag at all: "latest"
    numbers = 2 if name.rsplit("/", 1)[-1] in RELEASE_IS_TWO_NUMBERS else 3
    return re.match(rf"\d+(\.\d+){{{numbers - 1},}}(-|$)", tag) is not None


@pytest.mark.parametrize(
    "image",
    [
        "python:3.11-slim",
        "python",
        "postgres:latest",
        "postgres:15",
        "debian:bookworm-slim",
        "debian:12",
        "eclipse-mosquitto:2",
        "eclipse-mosquitto:2.0",
    ],
)
def test_a_floating_image_reference_is_not_pinned(image: str) -> None:
    assert not is_pinned(image)


@pytest.mark.parametrize(
    "image",
    [
        "python:3.11.13-slim-bookworm",
        "postgres:15.17-bookworm",
        "debian:12.11-slim",
        "eclipse-mosquitto:2.0.22",
        "python@sha256:" + "0" * 64,
    ],
)
def test_an_exact_image_reference_is_pinned(image: str) -> None:
    assert is_pinned(image)


@pytest.mark.parametrize("path", [PBXGUARD_DOCKERFILE, ASTERISK_DOCKERFILE], ids=lambda p: p.name)
def test_every_base_image_is_pinned_and_the_final_stage_is_not_root(path: Path) -> None:
    stages = read_stages(path)
    names = {stage.name for stage in stages if stage.name}
    for stage in stages:
        assert stage.base in names or is_pinned(stage.base), f"{path}: FROM {stage.base}"
    final = stages[-1]
    users = final.values("USER")
    assert users, f"{path}: the final stage sets no USER (it would run as root)"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), f"{path}: USER {users[-1]}"
    [healthcheck] = final.values("HEALTHCHECK")
    assert healthcheck.split()[0].upper() != "NONE"
    assert "CMD" in healthcheck


def test_the_pbxguard_image_runs_the_daemon_with_its_state_in_a_volume() -> None:
    stages = read_stages(PBXGUARD_DOCKERFILE)
    assert len(stages) == 2, "multi-stage: build the wheel, then install it"
    build, final = stages
    assert build.base == final.base
    assert build.base.startswith("python:3.11.")
    assert "slim" in final.base
    assert any("pip wheel" in run for run in build.values("RUN"))
    assert any("pip install --no-index" in run for run in final.values("RUN"))
    [cmd] = final.values("CMD")
    assert json.loads(cmd) == ["pbxguard", "run", "--config", "/etc/pbxguard/pbxguard.toml"]
    volumes = [v for value in final.values("VOLUME") for v in json.loads(value)]
    assert volumes == [STATE_DIR]
    assert final.values("WORKDIR")[-1] == STATE_DIR
    env = " ".join(final.values("ENV"))
    assert f"STATE_DIRECTORY={STATE_DIR}" in env


def dockerignore_allows(patterns: list[str], path: str) -> bool:
    """Tell whether a path is sent in the build context (last matching pattern wins)."""
    included = True
    for pattern in patterns:
        negated = pattern.startswith("!")
        body = pattern[1:] if negated else pattern
        body = body.rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if body.startswith("**/"):
            matched = any(fnmatch.fnmatch(p, body[3:]) for p in parts)
        else:
            matched = any(fnmatch.fnmatch(prefix, body) for prefix in prefixes)
        if matched:
            included = negated
    return included


def test_the_build_context_holds_what_the_build_copies_and_nothing_private() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    build = read_stages(PBXGUARD_DOCKERFILE)[0]
    sources = [word for copy in build.values("COPY") for word in copy.split()[:-1]]
    assert {"pyproject.toml", "README.md", "LICENSE", "src"} <= set(sources)
    for source in sources:
        assert dockerignore_allows(patterns, source), f".dockerignore drops {source}"
    assert dockerignore_allows(patterns, "src/pbxguard/cli.py")
    for private in (
        ".venv/bin/python",
        "pbxguard.sqlite3",
        "deploy/compose.env",
        ".git/config",
        "src/pbxguard/__pycache__/cli.cpython-311.pyc",
        "tests/e2e/test_daemon.py",
    ):
        assert not dockerignore_allows(patterns, private), f".dockerignore lets {private} in"


def test_the_asterisk_image_builds_the_pinned_release_with_the_dialplans_modules() -> None:
    stages = read_stages(ASTERISK_DOCKERFILE)
    build = stages[0]
    assert "ASTERISK_VERSION=22.10.1" in build.values("ARG")
    script = " ".join(build.values("RUN"))
    assert "https://downloads.asterisk.org/pub/telephony/asterisk/releases" in script
    assert "sha256sum -c" in script
    assert "--with-pjproject-bundled" in script
    modules = module_list()
    assert {"chan_pjsip", "res_pjsip", "res_agi", "pbx_config", "res_rtp_asterisk"} <= modules
    assert len(modules) == len(set(modules))


def module_list() -> set[str]:
    text = (ROOT / "deploy" / "asterisk" / "modules.list").read_text(encoding="utf-8")
    names = [line.split("#")[0].strip() for line in text.splitlines()]
    return {name for name in names if name}


# Applications and functions of Asterisk's core need no module; the others name theirs.
CORE_APPLICATIONS = {
    "Answer", "BackGround", "Busy", "Congestion", "Goto", "GotoIf", "GotoIfTime", "Hangup",
    "NoOp", "Progress", "Ringing", "Set", "MSet", "Wait", "WaitExten",
}  # fmt: skip
APPLICATION_MODULES = {
    "Dial": "app_dial", "Gosub": "app_stack", "GosubIf": "app_stack", "Return": "app_stack",
    "ExecIf": "app_exec", "Exec": "app_exec", "AGI": "res_agi", "Read": "app_read",
    "Playback": "app_playback", "Verbose": "app_verbose", "SoftHangup": "app_softhangup",
    "MixMonitor": "app_mixmonitor", "ChanSpy": "app_chanspy", "Transfer": "app_transfer",
    "Originate": "app_originate", "SendDTMF": "app_senddtmf", "Echo": "app_echo",
}  # fmt: skip
FUNCTION_MODULES = {
    "CALLERID": "func_callerid", "REGEX": "func_strings", "LEN": "func_strings",
    "LOCAL": "app_stack", "CHANNEL": "func_channel", "CUT": "func_cut", "IF": "func_logic",
    "ISNULL": "func_logic", "EXISTS": "func_logic", "DB": "func_db", "ENV": "func_env",
    "GLOBAL": "func_global", "HANGUPCAUSE": "func_hangupcause", "DEVICE_STATE": "func_devstate",
    "PJSIP_ENDPOINT": "func_pjsip_endpoint", "PJSIP_CONTACT": "func_pjsip_contact",
    "TIMEOUT": "func_timeout",
}  # fmt: skip


def test_every_application_and_function_of_the_dialplan_is_built() -> None:
    """A new application in asterisk-config/extensions.conf must come with its module."""
    text = (ROOT / "asterisk-config" / "extensions.conf").read_text(encoding="utf-8")
    applications: set[str] = set()
    functions: set[str] = set()
    for raw in text.splitlines():
        line = raw.split(";")[0]
        step = re.match(r"\s*(?:exten\s*=>\s*[^,]+,|same\s*=>\s*)[^,]+,\s*(.*)", line)
        if step is None:
            continue
        body = step.group(1)
        first = re.match(r"(\w+)\(", body)
        if first:
            applications.add(first.group(1))
        # ExecIf(cond?App(args)) runs another application.
        applications.update(re.findall(r"\?(\w+)\(", body))
        functions.update(re.findall(r"\$\{([A-Z_]+)\(", body))
        functions.update(re.findall(r"\b(LOCAL)\(", body))
    assert {"Dial", "AGI", "Gosub"} <= applications
    modules = module_list()
    for app in sorted(applications - CORE_APPLICATIONS):
        assert app in APPLICATION_MODULES, f"which module provides {app}()? add it here"
        assert APPLICATION_MODULES[app] in modules, f"{app}() needs {APPLICATION_MODULES[app]}"
    for function in sorted(functions):
        assert function in FUNCTION_MODULES, f"which module provides {function}()? add it here"
        assert FUNCTION_MODULES[function] in modules, f"{function}() needs its module"


# -- the compose stack -----------------------------------------------------------------------


def docker_compose() -> str:
    found = shutil.which("docker-compose")
    if found is None:
        pytest.fail(
            "docker-compose is missing: apt-get install docker-compose (.ci/run does)",
            pytrace=False,
        )
    return found


def yaml_to_json(text: str, compose: str) -> Any:
    """Parse YAML with the interpreter docker-compose runs on (its PyYAML)."""
    shebang = Path(compose).read_text(encoding="utf-8", errors="replace").splitlines()[0]
    assert shebang.startswith("#!"), f"{compose} is not a script"
    interpreter = shebang[2:].split()
    converted = subprocess.run(
        [
            *interpreter,
            "-c",
            "import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)",
        ],
        input=text,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return json.loads(converted.stdout)


def compose_config(env_file: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [docker_compose(), "--env-file", str(env_file), "-f", str(COMPOSE_FILE), "config"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


@pytest.fixture(scope="module")
def filled_secrets() -> dict[str, str]:
    return {name: secrets.token_hex(16) for name in SECRET_VARIABLES}


@pytest.fixture(scope="module")
def resolved(tmp_path_factory: pytest.TempPathFactory, filled_secrets: dict[str, str]) -> Any:
    """The stack as docker-compose resolves it with the sample env file, secrets filled in."""
    text = ENV_EXAMPLE.read_text(encoding="utf-8")
    for name, value in filled_secrets.items():
        text, count = re.subn(rf"(?m)^{name}=$", f"{name}={value}", text)
        assert count == 1, f"{ENV_EXAMPLE.name} has no empty {name}= line"
    env_file = tmp_path_factory.mktemp("compose") / "compose.env"
    env_file.write_text(text, encoding="utf-8")
    result = compose_config(env_file)
    assert result.returncode == 0, result.stderr
    return yaml_to_json(result.stdout, docker_compose())


def test_compose_refuses_to_start_while_a_secret_is_empty() -> None:
    result = compose_config(ENV_EXAMPLE)
    assert result.returncode != 0
    assert "set PBXGUARD_AMI_SECRET in deploy/compose.env" in result.stderr


def test_the_stack_has_asterisk_pbxguard_postgres_and_mosquitto(resolved: Any) -> None:
    assert set(resolved["services"]) == {"asterisk", "pbxguard", "postgres", "mosquitto"}


def test_every_service_has_a_health_check(resolved: Any) -> None:
    for name, service in resolved["services"].items():
        check = service.get("healthcheck")
        assert check, f"{name} has no healthcheck"
        assert not check.get("disable", False), name
        test = check["test"]
        assert test[0] in ("CMD", "CMD-SHELL"), f"{name}: {test}"
        assert len(test) > 1, f"{name}: {test}"


def test_every_service_runs_as_a_user_other_than_root(resolved: Any) -> None:
    for name, service in resolved["services"].items():
        if "build" in service:
            dockerfile = Path(service["build"]["context"]) / service["build"].get(
                "dockerfile", "Dockerfile"
            )
            user = read_stages(dockerfile)[-1].values("USER")[-1]
        else:
            assert is_pinned(service["image"]), f"{name}: image {service['image']}"
            user = service.get("user", "root")
        assert user.split(":")[0] not in ("root", "0"), f"{name} runs as {user}"


def named_volumes(service: dict[str, Any]) -> dict[str, str]:
    """Return the service's named volumes, target -> volume name."""
    found = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if not source.startswith(("/", ".")):
            found[target] = source
    return found


def test_state_lives_in_named_volumes(resolved: Any) -> None:
    services = resolved["services"]
    assert set(resolved["volumes"]) >= {"pbxguard-state", "postgres-data", "mosquitto-data"}
    assert named_volumes(services["pbxguard"]) == {STATE_DIR: "pbxguard-state"}
    assert "/var/lib/postgresql/data" in named_volumes(services["postgres"])
    assert "/mosquitto/data" in named_volumes(services["mosquitto"])
    assert "/var/lib/asterisk" in named_volumes(services["asterisk"])
    # The spools pbxguard keeps while the database or the broker is down are in its volume.
    env = services["pbxguard"]["environment"]
    assert env["PBXGUARD_STATE_DIR"] == STATE_DIR
    assert env["PBXGUARD_MQTT__SPOOL"].startswith(STATE_DIR + "/")


def test_asterisk_gets_the_projects_configuration_read_only(resolved: Any) -> None:
    volumes = resolved["services"]["asterisk"]["volumes"]
    assert f"{ROOT / 'asterisk-config'}:/etc/asterisk-site:ro" in volumes
    site = resolved["services"]["pbxguard"]["volumes"]
    assert f"{ROOT / 'examples' / 'site'}:/etc/pbxguard:ro" in site


def test_secrets_come_from_the_env_file_and_only_where_needed(
    resolved: Any, filled_secrets: dict[str, str]
) -> None:
    services = resolved["services"]
    ami, db = filled_secrets["PBXGUARD_AMI_SECRET"], filled_secrets["PBXGUARD_DB_PASSWORD"]
    assert services["asterisk"]["environment"]["PBXGUARD_AMI_SECRET"] == ami
    assert services["pbxguard"]["environment"]["PBXGUARD_AMI__SECRET"] == ami
    assert services["pbxguard"]["environment"]["PGPASSWORD"] == db
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"] == db
    # The password is not in the ledger URL, and nobody gets a secret they do not use.
    assert db not in services["pbxguard"]["environment"]["PBXGUARD_LEDGER__URL"]
    for name, service in services.items():
        text = json.dumps(service.get("environment", {}))
        assert (ami in text) == (name in ("asterisk", "pbxguard")), name
        assert (db in text) == (name in ("pbxguard", "postgres")), name


SECRET_ASSIGNMENT = re.compile(
    r"""(?ix)
    (secret|password|passwd|token|api_?key)[A-Z_]*    # a name that holds a secret
    \s*[:=]\s*
    ["']?(?P<value>\$\{[^}]*\}|[^\s"'#;]*)            # its value, if any
    """
)
# An empty value, a variable reference (${VAR}, ${VAR:?message}, $var) or a sample marker.
PLACEHOLDERS = re.compile(
    r"^(|\$\{[A-Za-z_]+(:?[-?=+][^}]*)?\}|\$[A-Za-z_]+|<[^>]*>|CHANGE-ME.*|…)$"
)


def test_no_file_of_the_deployment_holds_a_secret() -> None:
    files = [
        COMPOSE_FILE,
        ENV_EXAMPLE,
        PBXGUARD_DOCKERFILE,
        ROOT / ".dockerignore",
        *sorted((ROOT / "deploy").rglob("*")),
        *sorted((ROOT / "examples").rglob("*")),
    ]
    checked = 0
    for path in files:
        # Prose (README.md) names the variables secrets go in; the files that configure are checked.
        if not path.is_file() or path.name == "compose.env" or path.suffix == ".md":
            continue
        checked += 1
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.lstrip().startswith(("#", ";")):
                continue
            for found in SECRET_ASSIGNMENT.finditer(line):
                value = found.group("value")
                assert PLACEHOLDERS.match(value), f"{path.relative_to(ROOT)}:{number}: {line}"
    assert checked >= 10
    ignored = (ROOT / "deploy" / ".gitignore").read_text(encoding="utf-8").splitlines()
    assert "compose.env" in ignored, "the filled-in env file must stay out of git"
