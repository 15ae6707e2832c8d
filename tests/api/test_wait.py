"""JobWaiter: a waiting request wakes on a job event, falls back to periodic re-checks when no
event comes, gives up at its timeout, and always unregisters itself."""

from __future__ import annotations

import asyncio
import threading
import time

from api.wait import JobWaiter, attach_in_process
from core.events import InProcessEventBus


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


def test_in_process_bus_published_from_another_thread_wakes_the_waiter() -> None:
    """Embedded mode: a worker thread publishes; the waiter on the event loop wakes up."""

    async def scenario() -> tuple[bool, float, JobWaiter]:
        waiter = JobWaiter(recheck_s=30)
        bus = InProcessEventBus()
        unsubscribe = attach_in_process(bus, waiter)
        flag = Flag()

        def worker_thread() -> None:
            time.sleep(0.05)
            flag.done = True
            bus.publish("job_1")

        thread = threading.Thread(target=worker_thread)
        started = time.monotonic()
        thread.start()
        try:
            result = await waiter.wait("job_1", is_done=flag.is_done, timeout=10)
        finally:
            thread.join()
            unsubscribe()
        return result, time.monotonic() - started, waiter

    result, elapsed, waiter = asyncio.run(scenario())
    assert result is True
    assert elapsed < 1.0
    assert waiter.waiting == 0


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
            bus.publish("job_1")

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
