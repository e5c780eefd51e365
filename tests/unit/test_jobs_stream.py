"""Job streams wait on the event loop (no thread held), end with the job, and are counted against a cap."""

from __future__ import annotations

import asyncio
import threading

import pytest

from proximity.api.jobs import JobRunner, StreamsFull


def test_a_stream_replays_then_follows_the_job_without_a_thread_and_ends_with_it():
    runner = JobRunner(max_streams=2)
    release = threading.Event()

    def work(job):
        job.step("waiting", 10)
        release.wait(10)
        job.step("released", 50)
        return "ok"

    job = runner.submit("test", "x", work)

    async def follow() -> list[str]:
        seen = []
        threads = threading.active_count()
        async for event in runner.stream(job):
            seen.append(event["event"] + ":" + event["data"].get("text", event["data"].get("status", "")))
            if event["data"].get("text") == "waiting":
                assert runner.streams == 1 and threading.active_count() == threads  # no thread per stream
                release.set()
        return seen

    seen = asyncio.run(asyncio.wait_for(follow(), 20))
    assert seen[0].startswith("queued") and "step:waiting" in seen and "step:released" in seen
    assert seen[-1] == "done:succeeded" and runner.streams == 0
    runner.shutdown()


def test_a_quiet_job_pings_and_the_cap_refuses_before_any_answer():
    runner = JobRunner(max_streams=1)
    release = threading.Event()
    job = runner.submit("test", "x", lambda job: release.wait(10))

    async def scenario() -> list[str]:
        first = job.events(ping=0.05)
        counted = runner._counted(job)
        events = [(await anext(counted))["event"]]  # counted: the one stream allowed
        with pytest.raises(StreamsFull, match="poll GET /api/v1/jobs/"):
            runner.stream(job)
        pings = []
        async for event in first:
            pings.append(event["event"])
            if event["event"] == "ping":
                break
        await counted.aclose()
        assert runner.streams == 0  # counted out when it ends
        release.set()
        return events + pings

    seen = asyncio.run(asyncio.wait_for(scenario(), 20))
    assert seen[0] == "queued" and seen[-1] == "ping"
    runner.shutdown()
