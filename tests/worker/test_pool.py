"""AsyncioPool under a real Celery worker (WorkController) on the in-process transport: coroutine
tasks run concurrently on one event loop without a thread each; an error the task lists in
``autoretry_for`` is retried by Celery (``Task.retry``: a new message, up to ``max_retries``);
another error is not; a warm shutdown lets the tasks in flight end, then closes the loop's
clients. (A worker killed mid-image: tests/e2e/test_resilience.py.)"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis
from celery import Celery
from celery.platforms import EX_OK
from celery.worker import WorkController
from celery.worker import state as worker_state

from core.config import Settings
from core.queue import celery_config
from worker.pool import AsyncioPool, coroutine_task, register_loop_closer, register_loop_opener, run_on_loop


class Flaky(ConnectionError):
    """An infrastructure fault the task retries on."""


@dataclass
class Worker:
    """A Celery app with one queue of its own, and its worker running on AsyncioPool."""

    app: Celery
    queue: str
    controller: Any = None
    thread: threading.Thread | None = None
    calls: dict[str, int] = field(default_factory=dict)

    def task(self, coroutine: Callable[..., Awaitable[Any]], **options: Any) -> str:
        name = f"test.{coroutine.__name__}.{uuid.uuid4().hex[:6]}"
        coroutine_task(self.app, coroutine, name=name, acks_late=True, ignore_result=True,
                       **{"default_retry_delay": 0, **options})
        return name

    def start(self, concurrency: int) -> None:
        ready = threading.Event()
        self.controller = WorkController(app=self.app, pool_cls=AsyncioPool, concurrency=concurrency,
                                         queues=[self.queue], without_heartbeat=True, without_mingle=True,
                                         without_gossip=True, loglevel="WARNING",
                                         ready_callback=lambda _consumer: ready.set())
        self.thread = threading.Thread(target=self.controller.start, daemon=True)
        self.thread.start()
        assert ready.wait(30), "the worker did not start"

    def send(self, name: str, *args: Any) -> None:
        self.app.send_task(name, args=list(args), queue=self.queue)

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
        if self.thread is not None:
            self.thread.join(30)
            assert not self.thread.is_alive()

    @property
    def pool(self) -> AsyncioPool:
        pool = self.controller.pool
        assert isinstance(pool, AsyncioPool)
        return pool


def _worker(tmp_path: Any, redis_url: str | None) -> Worker:
    """A Worker on a queue of its own; ``redis_url`` None: the in-process transport."""
    queue = f"pool-test-{uuid.uuid4().hex[:8]}"
    settings = Settings(data_dir=tmp_path, redis_url=redis_url, queue=queue, _env_file=None)  # type: ignore[call-arg]
    app = Celery(f"pool-test-{queue}", set_as_current=False)
    app.conf.update(celery_config(settings))
    return Worker(app, queue)


@pytest.fixture
def worker(tmp_path: Any) -> Iterator[Worker]:
    made = _worker(tmp_path, None)
    yield made
    made.stop()


REDIS_DB = 7


@pytest.fixture
def redis_worker(tmp_path: Any, redis_url: str) -> Iterator[Worker]:
    """A worker on Redis, the broker of distributed mode: Celery's consumer runs kombu's hub."""
    made = _worker(tmp_path, f"{redis_url}/{REDIS_DB}")
    yield made
    made.stop()
    client = redis.Redis.from_url(made.app.conf.broker_url)
    client.delete(made.queue)
    client.close()


def unacked(worker: Worker) -> list[str]:
    """Ids of the tasks of ``worker``'s queue that Redis holds as delivered, not acknowledged
    (kombu's ``unacked`` hash: message, exchange, routing key per delivery tag)."""
    client = redis.Redis.from_url(worker.app.conf.broker_url)
    try:
        held = [json.loads(raw) for raw in client.hgetall("unacked").values()]
    finally:
        client.close()
    return [message["headers"]["id"] for message, _exchange, routing_key in held if routing_key == worker.queue]


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_tasks_run_concurrently_on_one_loop_without_a_thread_each(worker: Worker) -> None:
    running: set[str] = set()
    peak = {"running": 0}
    release = threading.Event()
    loop_threads: set[int] = set()

    async def wait_upstream(task_id: str) -> str:
        loop_threads.add(threading.get_ident())
        running.add(task_id)
        peak["running"] = max(peak["running"], len(running))
        while not release.is_set():
            await asyncio.sleep(0.01)
        running.discard(task_id)
        return task_id

    name = worker.task(wait_upstream)
    worker.start(concurrency=100)
    threads_before = threading.active_count()
    for i in range(100):
        worker.send(name, f"t{i}")
    wait_for(lambda: len(running) == 100, 30, "100 tasks in flight")
    assert worker.pool.in_flight == 100
    # 100 waits in flight, on one thread: the thread pool would have started 100 threads
    assert threading.active_count() - threads_before < 5
    assert len(loop_threads) == 1
    release.set()
    wait_for(lambda: worker.pool.in_flight == 0, 30, "the tasks to end")
    assert peak["running"] == 100


def test_concurrency_bounds_the_tasks_in_flight(worker: Worker) -> None:
    running: set[str] = set()
    peak = {"running": 0}
    done: list[str] = []

    async def bounded(task_id: str) -> None:
        running.add(task_id)
        peak["running"] = max(peak["running"], len(running))
        await asyncio.sleep(0.05)
        running.discard(task_id)
        done.append(task_id)

    name = worker.task(bounded)
    worker.start(concurrency=5)
    for i in range(30):
        worker.send(name, f"t{i}")
    wait_for(lambda: len(done) == 30, 30, "30 tasks done")
    assert peak["running"] == 5  # Celery's prefetch limit: concurrency x worker_prefetch_multiplier (1)


def test_an_autoretry_error_is_retried_by_celery_until_it_succeeds(worker: Worker) -> None:
    calls: list[float] = []

    async def flaky_twice(label: str) -> str:
        calls.append(time.monotonic())
        if len(calls) <= 2:
            raise Flaky(f"{label}: the database is away")
        return label

    name = worker.task(flaky_twice, autoretry_for=(Flaky,), retry_backoff=False, max_retries=5)
    worker.start(concurrency=4)
    worker.send(name, "once")
    wait_for(lambda: len(calls) == 3 and worker.pool.in_flight == 0, 30, "two retries and a success")
    time.sleep(0.3)
    assert len(calls) == 3  # succeeded: acknowledged, not delivered again


def test_retries_stop_at_max_retries_and_other_errors_are_not_retried(worker: Worker) -> None:
    flaky_calls: list[str] = []
    broken_calls: list[str] = []

    async def always_flaky(label: str) -> None:
        flaky_calls.append(label)
        raise Flaky("down for good")

    async def broken(label: str) -> None:
        broken_calls.append(label)
        raise ValueError("a bug, not an outage")

    flaky = worker.task(always_flaky, autoretry_for=(Flaky,), retry_backoff=False, max_retries=2)
    bug = worker.task(broken, autoretry_for=(Flaky,), retry_backoff=False, max_retries=2)
    worker.start(concurrency=4)
    worker.send(flaky, "a")
    worker.send(bug, "b")
    wait_for(lambda: len(flaky_calls) == 3 and len(broken_calls) == 1 and worker.pool.in_flight == 0, 30,
             "the first try and two retries")
    time.sleep(0.5)
    assert flaky_calls == ["a"] * 3  # the first try, then max_retries = 2
    assert broken_calls == ["b"]


def test_retry_backoff_waits_exponentially(worker: Worker) -> None:
    calls: list[float] = []

    async def flaky_once() -> None:
        calls.append(time.monotonic())
        if len(calls) == 1:
            raise Flaky("briefly away")

    name = worker.task(flaky_once, autoretry_for=(Flaky,), retry_backoff=1, retry_backoff_max=1, retry_jitter=False)
    worker.start(concurrency=2)
    worker.send(name)
    wait_for(lambda: len(calls) == 2, 30, "the retry")
    assert calls[1] - calls[0] >= 0.9  # Celery's countdown: 1 s x 2^0, no jitter


def test_warm_shutdown_lets_the_tasks_in_flight_end_then_closes_the_loop_clients(worker: Worker) -> None:
    order: list[str] = []
    started = threading.Event()

    async def slow(label: str) -> None:
        started.set()
        await asyncio.sleep(0.5)
        order.append(f"ended {label}")

    async def close_clients() -> None:
        asyncio.get_running_loop()  # on the pool's loop
        order.append("closed")

    name = worker.task(slow)
    register_loop_closer(worker.app, close_clients)
    worker.start(concurrency=4)
    worker.send(name, "a")
    worker.send(name, "b")
    assert started.wait(10)
    time.sleep(0.05)
    worker.stop()
    assert sorted(order[:2]) == ["ended a", "ended b"] and order[2:] == ["closed"]


def test_loop_openers_run_on_the_loop_before_the_first_task(worker: Worker) -> None:
    order: list[str] = []

    async def first() -> None:
        order.append("ran")

    async def open_clients() -> None:
        await asyncio.sleep(0.2)  # a connection being opened
        order.append("opened")

    name = worker.task(first)
    register_loop_opener(worker.app, open_clients)
    worker.send(name)  # sent before the worker starts: it waits in the queue
    worker.start(concurrency=2)
    wait_for(lambda: order == ["opened", "ran"], 10, "the opener, then the task")


def test_on_a_host_loop_the_tasks_run_there_and_a_warm_shutdown_leaves_it_running(worker: Worker) -> None:
    host = asyncio.new_event_loop()
    host_thread = threading.Thread(target=host.run_forever, daemon=True)
    host_thread.start()
    seen: list[tuple[str, Any]] = []

    async def where() -> None:
        await asyncio.sleep(0.2)
        seen.append(("task", asyncio.get_running_loop()))

    async def opened() -> None:
        seen.append(("opener", asyncio.get_running_loop()))

    async def closed() -> None:
        seen.append(("closer", asyncio.get_running_loop()))

    try:
        name = worker.task(where)
        run_on_loop(worker.app, host)
        register_loop_opener(worker.app, opened)
        register_loop_closer(worker.app, closed)
        before = {t.name for t in threading.enumerate()}
        worker.start(concurrency=4)
        assert "imagegate-loop" not in {t.name for t in threading.enumerate()} - before, "no loop of the pool's own"
        worker.send(name)
        worker.send(name)
        wait_for(lambda: len(seen) == 3, 10, "the opener and two tasks")
        worker.stop()
        assert seen == [("opener", host), ("task", host), ("task", host), ("closer", host)]
        assert host.is_running() and not host.is_closed()
        still = asyncio.run_coroutine_threadsafe(asyncio.sleep(0, result="serving"), host)
        assert still.result(5) == "serving"
    finally:
        host.call_soon_threadsafe(host.stop)
        host_thread.join(10)
        host.close()


def test_on_redis_the_tasks_are_acknowledged_by_the_consumer_thread_not_a_thread_pool(redis_worker: Worker) -> None:
    done: list[str] = []

    async def quick(label: str) -> None:
        await asyncio.sleep(0.01)
        done.append(label)

    name = redis_worker.task(quick)
    redis_worker.start(concurrency=8)
    for i in range(40):
        redis_worker.send(name, f"t{i}")
    wait_for(lambda: len(done) == 40 and not unacked(redis_worker), 30, "40 tasks done and acknowledged")
    # the ends were reported on the hub's thread: the fallback executor never started a thread
    assert not [t.name for t in threading.enumerate() if t.name.startswith("imagegate-acks")]
    time.sleep(0.3)
    assert sorted(done) == sorted(f"t{i}" for i in range(40))  # each once: none delivered again


def test_on_redis_an_autoretry_error_is_sent_again_from_the_consumer_thread(redis_worker: Worker) -> None:
    calls: list[str] = []

    async def flaky_once(label: str) -> str:
        calls.append(label)
        if len(calls) == 1:
            raise Flaky("the database is away")
        return label

    name = redis_worker.task(flaky_once, autoretry_for=(Flaky,), retry_backoff=False, max_retries=3)
    redis_worker.start(concurrency=4)
    redis_worker.send(name, "x")
    wait_for(lambda: len(calls) == 2 and redis_worker.pool.in_flight == 0 and not unacked(redis_worker), 30,
             "a retry, then a success")
    time.sleep(0.3)
    assert calls == ["x", "x"]


def test_on_redis_a_warm_shutdown_acknowledges_the_tasks_that_were_in_flight(redis_worker: Worker) -> None:
    started: list[str] = []
    ended: list[str] = []

    async def slow(label: str) -> None:
        started.append(label)
        await asyncio.sleep(0.5)
        ended.append(label)

    name = redis_worker.task(slow)
    redis_worker.start(concurrency=4)
    for label in "abc":
        redis_worker.send(name, label)
    wait_for(lambda: len(started) == 3, 10, "three tasks in flight")
    assert len(unacked(redis_worker)) == 3
    # what SIGTERM does (Celery's handler sets should_stop): the hub's loop stops on its next
    # turn, then its thread stops the worker, which drains the pool and reports the three ends
    worker_state.should_stop = EX_OK
    try:
        assert redis_worker.thread is not None
        redis_worker.thread.join(30)
        assert not redis_worker.thread.is_alive()
    finally:
        worker_state.should_stop = None
    assert sorted(ended) == ["a", "b", "c"]
    assert unacked(redis_worker) == []  # not delivered again to the next worker
