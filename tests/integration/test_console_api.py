"""The console's JSON API over a real socket: sign-in, scope, CSRF, health, metrics, fuzzing."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from tests.support.agi_client import agi_request
from tests.support.console import ACCOUNTS, PASSWORD, ConsoleRun, console_in_thread

API = "/api/v1"


@pytest.fixture
def run(tmp_path: Path) -> Iterator[ConsoleRun]:
    with console_in_thread(tmp_path) as found:
        yield found


@contextmanager
def signed_in(run: ConsoleRun, username: str) -> Iterator[httpx.Client]:
    """Yield a client signed in as ``username`` (its CSRF token set on every request)."""
    with httpx.Client(base_url=run.base_url, timeout=30) as client:
        answer = client.post(f"{API}/session", json={"username": username, "password": PASSWORD})
        assert answer.status_code == 200, answer.text
        client.headers["X-CSRF-Token"] = answer.json()["csrf"]
        yield client


def operations(run: ConsoleRun) -> list[tuple[str, str]]:
    """Return every (method, path) of the OpenAPI document."""
    document = httpx.get(f"{run.base_url}{API}/openapi.json").json()
    found = []
    for path, methods in document["paths"].items():
        for method in methods:
            concrete = re.sub(r"\{[^}]+\}", "1", path)
            found.append((method.upper(), concrete))
    return found


def test_every_endpoint_refuses_a_caller_without_a_session(run: ConsoleRun) -> None:
    found = operations(run)
    assert len(found) >= 25
    for method, path in found:
        if path == f"{API}/session" and method == "POST":
            continue  # signing in is how a session starts
        answer = httpx.request(method, f"{run.base_url}{path}", json={})
        assert answer.status_code == 401, (method, path, answer.status_code, answer.text)


def test_a_head_of_another_department_finds_nothing_of_it(run: ConsoleRun) -> None:
    eng = run.offences["eng"].id
    mkt = run.offences["mkt"].id
    with signed_in(run, "head-mkt") as head:
        listed = head.get(f"{API}/offences").json()
        assert [o["id"] for o in listed["offences"]] == [mkt]
        assert head.get(f"{API}/offences/{eng}").status_code == 404
        assert head.get(f"{API}/offences/{mkt}").status_code == 200
        assert head.get(f"{API}/offences", params={"department": "工程部"}).status_code == 403
        refused = head.post(
            f"{API}/offences/{eng}/decision", json={"kind": "waiver", "reason": "not mine"}
        )
        assert refused.status_code == 404
        fill = head.post(
            f"{API}/register/{run.register_ids['eng']}/fill",
            json={"subject": "x", "outcome": "y"},
        )
        assert fill.status_code == 404
        entries = head.get(f"{API}/register").json()["entries"]
        assert {e["department"] for e in entries} == {"市场部"}
        calls = head.get(f"{API}/calls").json()["calls"]
        assert [c["linkedid"] for c in calls] == ["reg-mkt"]
    with signed_in(run, "head-eng") as head:
        assert head.get(f"{API}/offences/{eng}").status_code == 200
        waived = head.post(
            f"{API}/offences/{eng}/decision", json={"kind": "waiver", "reason": "客户来电回拨"}
        )
        assert waived.status_code == 200, waived.text
        assert waived.json()["amount"] == "0.00"
        assert waived.json()["history"][0]["by"] == "head-9001"
    with signed_in(run, "liu") as staff:
        assert staff.get(f"{API}/offences/{eng}").status_code == 404
        assert [o["id"] for o in staff.get(f"{API}/offences").json()["offences"]] == [mkt]
        own_calls = staff.get(f"{API}/calls").json()["calls"]
        assert [(c["person_id"], c["linkedid"]) for c in own_calls] == [("liu-fang", "reg-mkt")]
    with signed_in(run, "duty") as duty:
        assert duty.get(f"{API}/offences").status_code == 403
        assert duty.get(f"{API}/rota").status_code == 200
    with signed_in(run, "admin") as admin:
        trail = admin.get(f"{API}/audit").json()["entries"]
        assert any(
            e["action"] == "offence_waiver" and e["actor"] == "head-eng" and e["target"] == str(eng)
            for e in trail
        )


def test_a_change_without_the_csrf_token_is_refused(run: ConsoleRun) -> None:
    with signed_in(run, "head-eng") as head:
        del head.headers["X-CSRF-Token"]
        answer = head.post(
            f"{API}/offences/{run.offences['eng'].id}/decision",
            json={"kind": "waiver", "reason": "forged"},
        )
        assert answer.status_code == 403
        assert head.get(f"{API}/offences/{run.offences['eng'].id}").json()["history"] == []


def test_sign_in_locks_after_repeated_wrong_passwords(run: ConsoleRun) -> None:
    with httpx.Client(base_url=run.base_url) as client:
        for _ in range(5):
            wrong = client.post(f"{API}/session", json={"username": "gm", "password": "nope"})
            assert wrong.status_code == 403
        right = client.post(f"{API}/session", json={"username": "gm", "password": PASSWORD})
        assert right.status_code == 403
        assert "locked" in right.json()["error"]
    with signed_in(run, "admin") as admin:
        actions = [e["action"] for e in admin.get(f"{API}/audit").json()["entries"]]
        assert actions.count("login_failed") == 5
        assert "login_locked" in actions


def test_health_and_metrics(run: ConsoleRun) -> None:
    host, port = run.agi
    verdict = asyncio.run(agi_request(host, port, callerid="2003", extension="00441632960123"))
    assert verdict.verdict == "deny"
    health = httpx.get(f"{run.base_url}/healthz")
    body = health.json()
    assert body["ami"] is False  # nothing listens on the AMI port
    assert body["fastagi"] is True
    assert body["ledger"] is True
    assert health.status_code == 503  # not ready without the PBX
    text = httpx.get(f"{run.base_url}/metrics").text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    decisions = {
        (s.labels["class"], s.labels["verdict"]): s.value
        for s in families["pbxguard_decisions"].samples
    }
    assert decisions[("international", "deny")] == 1
    histogram = families["pbxguard_fastagi_request_seconds"]
    count = next(s.value for s in histogram.samples if s.name.endswith("_count"))
    assert count == 1
    assert "pbxguard_journal_pending" in families
    assert {s.labels["state"] for s in families["pbxguard_hangups"].samples} == {
        "sent",
        "confirmed",
        "failed",
    }


def test_no_input_makes_the_api_fail(run: ConsoleRun) -> None:
    """Generated requests for every operation of the OpenAPI document: never a 500."""
    schema = schemathesis.openapi.from_url(f"{run.base_url}{API}/openapi.json")
    strategies = [
        result.ok().as_strategy()
        for result in schema.get_all_operations()
        if result.ok().path != "/session"
    ]
    roles = ["admin", "head-eng", "liu", "auditor"]
    with ExitStack() as stack:
        clients = {name: stack.enter_context(signed_in(run, name)) for name in roles}
        seen: list[int] = []

        @settings(
            max_examples=250,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        @given(case=st.sampled_from(strategies).flatmap(lambda s: s), role=st.sampled_from(roles))
        def check(case: Any, role: str) -> None:
            client = clients[role]
            kwargs = case.as_transport_kwargs(base_url=run.base_url)
            headers = {k: v for k, v in (kwargs.get("headers") or {}).items() if isinstance(v, str)}
            headers["X-CSRF-Token"] = client.headers["X-CSRF-Token"]
            answer = client.request(
                kwargs["method"],
                kwargs["url"],
                params=kwargs.get("params"),
                json=kwargs.get("json"),
                headers=headers,
            )
            seen.append(answer.status_code)
            assert answer.status_code < 500, (kwargs, answer.text)

        check()
        assert len(set(seen)) > 3


def test_every_account_can_sign_in(run: ConsoleRun) -> None:
    for username, (role, _) in ACCOUNTS.items():
        with signed_in(run, username) as client:
            me = client.get(f"{API}/session").json()
            assert me["role"] == role


def test_the_duty_lead_reads_only_live_state_and_the_rota(run: ConsoleRun) -> None:
    allowed = {f"{API}/session", f"{API}/rota", f"{API}/overview"}
    with signed_in(run, "duty") as duty:
        for method, path in operations(run):
            if method != "GET" or path in allowed:
                continue
            answer = duty.get(path)
            assert answer.status_code == 403, (path, answer.status_code, answer.text)
        assert duty.get(f"{API}/overview").status_code == 200
    with signed_in(run, "zhang") as staff:
        for path in ("/users", "/audit", "/policy", "/set-aside", "/overview", "/rota"):
            assert staff.get(f"{API}{path}").status_code == 403, path
        grant = staff.post(
            f"{API}/approvals",
            json={
                "person": "zhang-wei",
                "valid_from": "2030-01-01T09:00:00+08:00",
                "valid_until": "2030-01-01T18:00:00+08:00",
                "reason": "self-service",
                "number_class": "domestic_ld",
            },
        )
        assert grant.status_code == 403
