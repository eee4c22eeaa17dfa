"""The FastAGI server when the process runs out of descriptors (EMFILE), in a process of its own."""

from __future__ import annotations

import asyncio

from tests.support.agi_client import HeldConnection, agi_request, blunt_request
from tests.support.fastagi_process import FastAgiProcess


async def test_out_of_descriptors_pauses_accept_and_resumes_when_they_are_freed() -> None:
    """Held connections use up the descriptors; a request in flight and one queued both end well."""
    answer_held = asyncio.Event()
    holding = asyncio.Event()

    async def slow_first_answer(line: str) -> None:
        if line.startswith("GET VARIABLE"):
            holding.set()
            await answer_held.wait()

    async with FastAgiProcess.running(open_files=32) as server:
        host, port = server.address
        in_flight = asyncio.create_task(
            agi_request(host, port, extension="00441632960123", before_answering=slow_first_answer)
        )
        flood: list[HeldConnection] = []
        try:
            async with asyncio.timeout(20):
                await holding.wait()
                # More than the 32 descriptors allow: the kernel queues the rest.
                flood += [await HeldConnection.open(host, port) for _ in range(40)]
                await server.logs.wait_for("fastagi.accept_paused")
                queued = asyncio.create_task(agi_request(host, port, extension="02112345678"))
                answer_held.set()
                first = await in_flight
        finally:
            await asyncio.gather(*(connection.close() for connection in flood))
        async with asyncio.timeout(20):
            second = await queued
            await server.logs.wait_for("fastagi.accept_resumed")
    [closed] = server.logs.named("fastagi.closed")

    assert first.verdict == "deny"
    assert second.verdict == "allow"
    [paused] = server.logs.named("fastagi.accept_paused")
    assert (paused["error"], paused["open_files_limit"], paused["log_level"]) == (
        "EMFILE",
        32,
        "warning",
    )
    assert len(server.logs.named("fastagi.accept_resumed")) == 1
    assert closed["accept_paused"] >= 1
    assert (closed["served"], closed["refused"], closed["failed"]) == (2, 0, 0)
    assert closed["abandoned"] == 40
    # asyncio's own server would log a traceback here once per waiting connection.
    assert not [line for line in server.stderr if "out of system resource" in line]


async def test_a_shortage_longer_than_the_deadline_answers_waiting_callers_failure() -> None:
    async with FastAgiProcess.running(open_files=64, request_timeout=0.5) as server:
        host, port = server.address
        await server.command("hog")
        async with asyncio.timeout(20):
            await server.logs.wait_for("test.hogged")
            answer = await blunt_request(host, port)
        await server.command("release")
        async with asyncio.timeout(20):
            await server.logs.wait_for("test.released")
            result = await agi_request(host, port, extension="02112345678")
            [resumed] = await server.logs.wait_for("fastagi.accept_resumed")
    [closed] = server.logs.named("fastagi.closed")

    assert answer == b"failure\n"
    assert result.verdict == "allow"
    assert resumed["refused"] == 1
    assert len(server.logs.named("fastagi.accept_paused")) == 1
    assert (closed["refused"], closed["served"]) == (1, 1)
    assert closed["accept_paused"] >= 2
