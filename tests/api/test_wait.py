"""JobWaiter: a waiting request wakes on a job event, falls back to periodic re-checks when no
event comes, gives up at its timeout, and always unregisters itself."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import pytest

from api.wait import JobWaiter, attach_in_process
from core.events import NOT_ENDED, InProcessEventBus, ended_status, payload
from core.jobs import JobStatus


class Flag:
    """A job's 'done' state as the waiter reads it; counts how often it was read."""

    def __init__(self) -> None:
        self.done = False
        self.checks = 0

    async def is_done(self) -> bool:
        self.checks += 1
        return self.done


def test_notify_wakes_the_waiter_promptly() -> None:
    """recheck_s is long: only the event can explain a fast answer."""

    async def scenario() -> tuple[bool, float, int, JobWaiter]:
        waiter = JobWaiter(recheck_s=30)
        flag = Flag()

        async def finish_job() -> None:
            await asyncio.sleep(0.05)
            flag.done = True
            waiter.notify("job_1")

        started = time.monotonic()
        finisher = asyncio.create_task(finish_job())
        result = await waiter.wait("job_1", is_done=flag.is_done, timeout=10)
        await finisher
        return result, time.monotonic() - started, flag.checks, waiter

    result, elapsed, checks, waiter = asyncio.run(scenario())
    assert result is True
    assert elapsed < 1.0
    assert checks == 2  # once on entry, once after the event
    assert waiter.waiting == 0


def test_notify_for_another_job_does_not_wake() -> None:
    async def scenario() -> tuple[bool, int, JobWaiter]:
        waiter = JobWaiter(recheck_s=30)
        flag = Flag()

        async def other_job() -> None:
            await asyncio.sleep(0.02)
            waiter.notify("job_other")

        other = asyncio.create_task(other_job())
        result = await waiter.wait("job_1", is_done=flag.is_done, timeout=0.3)
        await other
        return result, flag.checks, waiter

    result, checks, waiter = asyncio.run(scenario())
    assert result is False
    assert checks == 2  # on entry and at the deadline; a wrong wake-up would add one
    assert waiter.waiting == 0


def test_periodic_recheck_finds_the_job_done_without_an_event() -> None:
    async def scenario() -> tuple[bool, float, int, JobWaiter]:
        waiter = JobWaiter(recheck_s=0.05)
        flag = Flag()

        async def finish_silently() -> None:
            await asyncio.sleep(0.1)
            flag.done = True  # no notify(): the event was lost

        started = time.monotonic()
        finisher = asyncio.create_task(finish_silently())
        result = await waiter.wait("job_1", is_done=flag.is_done, timeout=5)
        await finisher
        return result, time.monotonic() - started, flag.checks, waiter

    result, elapsed, checks, waiter = asyncio.run(scenario())
    assert result is True
    assert 0.1 <= elapsed < 1.0
    assert checks >= 3
    assert waiter.waiting == 0


def test_timeout_returns_false() -> None:
    async def scenario() -> tuple[bool, float, JobWaiter]:
        waiter = JobWaiter(recheck_s=0.05)
        flag = Flag()
        started = time.monotonic()
        result = await waiter.wait("job_1", is_done=flag.is_done, timeout=0.2)
        return result, time.monotonic() - started, waiter

    result, elapsed, waiter = asyncio.run(scenario())
    assert result is False
    assert 0.2 <= elapsed < 1.0
    assert waiter.waiting == 0


def test_already_done_returns_at_once() -> None:
    async def scenario() -> tuple[bool, int, JobWaiter]:
        waiter = JobWaiter(recheck_s=30)
        flag = Flag()
        flag.done = True
        return await waiter.wait("job_1", is_done=flag.is_done, timeout=10), flag.checks, waiter

    result, checks, waiter = asyncio.run(scenario())
    assert (result, checks, waiter.waiting) == (True, 1, 0)


def test_many_waiters_on_one_job_all_wake_and_unregister() -> None:
    async def scenario() -> tuple[list[bool], int, int]:
        waiter = JobWaiter(recheck_s=30)
        flag = Flag()
        tasks = [
            asyncio.create_task(waiter.wait("job_1", is_done=flag.is_done, timeout=5))
            for _ in range(5)
        ]
        await asyncio.sleep(0.05)
        during = waiter.waiting
        flag.done = True
        waiter.notify("job_1")
        results = await asyncio.wait_for(asyncio.gather(*tasks), timeout=1)
        return list(results), during, waiter.waiting

    results, during, after = asyncio.run(scenario())
    assert results == [True] * 5
    assert during == 5
    assert after == 0


@pytest.mark.parametrize(("ended", "expected", "checks"), [(None, False, 2), ("canceled", True, 0)])
def test_in_process_bus_published_from_another_thread_wakes_the_waiter(
        ended: str | None, expected: bool, checks: int) -> None:
    """Embedded mode: a worker thread publishes; the waiter on the event loop wakes up. With the
    job's status (and the job expected), it reads nothing; plain subscribers still get the id."""

    async def scenario() -> tuple[bool, float, JobWaiter, int, list[str]]:
        waiter = JobWaiter(recheck_s=30)
        bus = InProcessEventBus()
        unsubscribe = attach_in_process(bus, waiter)
        plain: list[str] = []
        bus.subscribe(plain.append)
        flag = Flag()
        if expected:
            waiter.expect("job_1")

        def worker_thread() -> None:
            time.sleep(0.05)
            flag.done = True
            bus.notify("job_1", ended=ended)

        thread = threading.Thread(target=worker_thread)
        started = time.monotonic()
        thread.start()
        try:
            result = await waiter.wait("job_1", is_done=flag.is_done, timeout=10)
        finally:
            thread.join()
            unsubscribe()
        return result, time.monotonic() - started, waiter, flag.checks, plain

    result, elapsed, waiter, read, plain = asyncio.run(scenario())
    assert result is True
    assert elapsed < 1.0
    assert waiter.waiting == 0
    assert read == checks
    assert plain == ["job_1"]


def test_unsubscribed_bus_no_longer_wakes() -> None:
    """After unsubscribing, an event is not delivered: the job is only seen at the deadline."""

    async def scenario() -> tuple[bool, float, int]:
        waiter = JobWaiter(recheck_s=30)
        bus = InProcessEventBus()
        attach_in_process(bus, waiter)()  # subscribe, then unsubscribe at once
        flag = Flag()

        def worker_thread() -> None:
            time.sleep(0.02)
            flag.done = True
            bus.notify("job_1")

        thread = threading.Thread(target=worker_thread)
        started = time.monotonic()
        thread.start()
        try:
            result = await waiter.wait("job_1", is_done=flag.is_done, timeout=0.3)
        finally:
            thread.join()
        return result, time.monotonic() - started, flag.checks

    result, elapsed, checks = asyncio.run(scenario())
    assert result is True  # seen by the re-check at the deadline ...
    assert elapsed >= 0.3  # ... not woken early by the event
    assert checks == 2


# -- events that carry the job's terminal status ---------------------------------------------


@dataclass
class Waited:
    result: bool
    checks: int
    elapsed: float
    waiter: JobWaiter


def wait_while(meanwhile: Callable[[JobWaiter, Flag], Awaitable[None]], *, expect: bool = True,
               statuses: bool = True, recheck_s: float = 30, timeout: float = 10) -> Waited:
    """Wait on ``job_1`` (announced with ``expect``, by a waiter that has heard a status from
    this publisher when ``statuses``) while ``meanwhile`` plays the worker."""

    async def scenario() -> Waited:
        waiter = JobWaiter(recheck_s=recheck_s)
        flag = Flag()
        if statuses:
            waiter.expect("job_other")  # one of this gateway's jobs: its workers send statuses
            waiter.heard("job_other", JobStatus.SUCCEEDED)
        if expect:
            waiter.expect("job_1")
        started = time.monotonic()
        task = asyncio.create_task(meanwhile(waiter, flag))
        result = await waiter.wait("job_1", is_done=flag.is_done, timeout=timeout)
        await task
        return Waited(result, flag.checks, time.monotonic() - started, waiter)

    return asyncio.run(scenario())


async def later(seconds: float = 0.05) -> None:
    await asyncio.sleep(seconds)


def test_an_ended_event_returns_without_reading_the_job() -> None:
    async def finish(waiter: JobWaiter, flag: Flag) -> None:
        await later()
        waiter.heard("job_1", JobStatus.SUCCEEDED)

    waited = wait_while(finish)  # submitted here: not even the first check is needed
    assert (waited.result, waited.checks, waited.waiter.database_checks) == (True, 0, 0)
    assert waited.elapsed < 1.0
    assert waited.waiter.status_of("job_1") == JobStatus.SUCCEEDED
    assert waited.waiter.waiting == 0


def test_an_unexpected_job_is_read_once_on_entry_then_woken_by_its_status() -> None:
    """An idempotent replay's job may have ended before: it is read on entry."""

    async def finish(waiter: JobWaiter, flag: Flag) -> None:
        await later()
        waiter.heard("job_1", JobStatus.FAILED)

    waited = wait_while(finish, expect=False)
    assert (waited.result, waited.checks) == (True, 1)


def test_a_status_heard_before_the_wait_is_remembered() -> None:
    """The job ended between its enqueue and the request's wait: nothing is read."""

    async def scenario() -> tuple[bool, int]:
        waiter = JobWaiter(recheck_s=30)
        flag = Flag()
        waiter.expect("job_1")
        waiter.heard("job_1", JobStatus.PARTIAL)
        return await waiter.wait("job_1", is_done=flag.is_done, timeout=10), flag.checks

    assert asyncio.run(scenario()) == (True, 0)


def test_non_terminal_events_read_nothing_once_statuses_are_heard() -> None:
    async def progress_then_finish(waiter: JobWaiter, flag: Flag) -> None:
        for _ in range(5):
            await later(0.01)
            waiter.heard("job_1", None)  # one image of several done
        waiter.heard("job_1", JobStatus.SUCCEEDED)

    waited = wait_while(progress_then_finish)
    assert (waited.result, waited.checks) == (True, 0)
    assert waited.elapsed < 1.0


@pytest.mark.parametrize("elsewhere", [False, True])
def test_plain_events_from_a_publisher_without_statuses_make_the_waiter_read(elsewhere: bool) -> None:
    """Until a status has been heard, ``b"1"`` may have ended the job: the waiter reads it. A
    status of another deployment's job (same Redis: pub/sub ignores the database number) does
    not change that."""

    async def finish(waiter: JobWaiter, flag: Flag) -> None:
        if elsewhere:
            waiter.heard("job_elsewhere", JobStatus.SUCCEEDED)
        await later()
        flag.done = True
        waiter.heard("job_1", None)

    waited = wait_while(finish, statuses=False)
    assert (waited.result, waited.checks) == (True, 1)
    assert waited.elapsed < 1.0


def test_a_plain_event_before_the_wait_makes_it_read_on_entry() -> None:
    """From a publisher without statuses, an event that came before the request started waiting
    may have ended the job: the expected job is read at once, not at the first re-check."""

    async def scenario() -> tuple[bool, int, float]:
        waiter = JobWaiter(recheck_s=30)
        flag = Flag()
        waiter.expect("job_1")
        flag.done = True
        waiter.heard("job_1", None)
        started = time.monotonic()
        result = await waiter.wait("job_1", is_done=flag.is_done, timeout=10)
        return result, flag.checks, time.monotonic() - started

    result, checks, elapsed = asyncio.run(scenario())
    assert (result, checks) == (True, 1)
    assert elapsed < 1.0


def test_a_lost_ended_event_is_found_by_the_recheck() -> None:
    async def finish_silently(waiter: JobWaiter, flag: Flag) -> None:
        await later(0.02)
        waiter.heard("job_1", None)  # a progress event; the ending's event is lost
        flag.done = True

    waited = wait_while(finish_silently, recheck_s=0.1, timeout=5)
    assert (waited.result, waited.checks) == (True, 1)
    assert 0.1 <= waited.elapsed < 1.0


def test_remembered_jobs_are_bounded() -> None:
    waiter = JobWaiter(remember=3)
    for k in range(5):
        waiter.expect(f"job_{k}")
        waiter.heard(f"job_{k}", JobStatus.SUCCEEDED)
    assert [waiter.status_of(f"job_{k}") for k in range(5)] == [None, None, *[JobStatus.SUCCEEDED] * 3]
    for k in range(5, 10):
        waiter.expect(f"job_{k}")
    assert len(waiter._expected) == 3


def test_payloads() -> None:
    assert payload(None) == NOT_ENDED == b"1"
    assert payload("partial") == b"partial"
    with pytest.raises(ValueError):
        payload("running")
    assert ended_status(b"succeeded") == JobStatus.SUCCEEDED
    assert ended_status("canceled") == JobStatus.CANCELED
    assert ended_status(b"1") is None
    assert ended_status(b"running") is None


def test_redis_events_carry_the_status_from_the_publisher(redis_url: str) -> None:
    """Over real Redis pub/sub: the worker's publisher sends the status, the API's subscriber
    ends the wait without a read; a progress event before it reads nothing either."""
    import redis.asyncio as aioredis

    from api.wait import RedisJobEvents
    from core.events import RedisEventPublisher
    from core.ids import new_id

    job_id, other = new_id("job"), new_id("job")
    async def scenario() -> tuple[bool, int]:
        publisher = RedisEventPublisher(aioredis.Redis.from_url(redis_url))
        client = aioredis.Redis.from_url(redis_url)
        waiter = JobWaiter(recheck_s=30)
        events = RedisJobEvents(client, waiter)
        events.start()
        flag = Flag()
        try:
            waiter.expect(other)  # a job of this gateway: its statuses say the workers send them
            for _ in range(100):  # until the subscription is live
                await publisher.publish(other, "succeeded")
                if waiter.status_of(other) is not None:
                    break
                await asyncio.sleep(0.05)
            waiter.expect(job_id)

            async def worker() -> None:
                await asyncio.sleep(0.05)
                await publisher.publish(job_id)
                await publisher.publish(job_id, "succeeded")

            task = asyncio.create_task(worker())
            result = await waiter.wait(job_id, is_done=flag.is_done, timeout=10)
            await task
            return result, flag.checks
        finally:
            await events.stop()
            await client.aclose()
            await publisher.aclose()

    assert asyncio.run(scenario()) == (True, 0)


def test_changes_hears_every_event_of_its_job_and_only_of_it() -> None:
    """What a job's event stream sleeps on: each event of the job wakes it (one that came before
    the call counts), another job's does not, and it unregisters at the end of the block."""

    async def scenario() -> tuple[list[bool], JobWaiter]:
        waiter = JobWaiter(recheck_s=30)
        heard = []
        with waiter.changes("job_1") as changes:
            waiter.notify("job_1")  # before the call: not missed
            heard.append(await changes.next(timeout=5))
            waiter.notify("job_other")
            heard.append(await changes.next(timeout=0.05))
            asyncio.get_running_loop().call_later(0.02, waiter.notify, "job_1")
            heard.append(await changes.next(timeout=5))
            assert waiter.waiting == 1
        return heard, waiter

    heard, waiter = asyncio.run(scenario())
    assert heard == [True, False, True]
    assert waiter.waiting == 0
