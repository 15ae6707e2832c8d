"""A Celery pool that runs tasks as coroutines on one event loop per worker process.

An image spends seconds to minutes waiting for its upstream. Celery's thread pool holds a thread
for each of those waits; :class:`AsyncioPool` holds a coroutine: one event loop (uvloop when it
is installed) runs on one thread of the worker process, and every task in flight is a coroutine
on it. Hundreds of upstream calls in flight then cost a few megabytes and no threads. In
embedded mode the loop is the API's own (:func:`run_on_loop`): the pool starts none.

Celery still does everything else: its consumer takes the messages from the broker, its prefetch
limit (``worker_concurrency`` x ``worker_prefetch_multiplier``) bounds how many tasks run at once,
and its request objects acknowledge them (late: ``acks_late``) or reject them. The pool only
replaces how a request runs:

- :meth:`AsyncioPool.on_apply` gets what Celery hands a pool (its trace function and the
  request's message), decodes the message's body as :mod:`celery.app.trace` would (kombu's
  ``loads`` with the message's content type and encoding), finds the task, and schedules the
  task's :attr:`CoroutineTask.coroutine` on the loop (``asyncio.run_coroutine_threadsafe``);
- when the coroutine ends, the pool calls the request's callback as the trace would, with
  ``(failed, return value or ExceptionInfo, runtime)``, so that Celery acknowledges, rejects or
  logs the task exactly as for any pool. That happens off the event loop, since an
  acknowledgement is a broker round trip: on the thread of Celery's consumer when it runs kombu's
  event loop (the hub, with a broker such as Redis: :meth:`AsyncioPool.register_with_event_loop`),
  where Celery's prefork pool acknowledges too, so the request's bookkeeping and the broker
  channel are only ever touched by that thread; else (the in-process broker of embedded mode,
  which has no hub) on a small executor;
- an exception the task lists in ``autoretry_for`` becomes Celery's own :meth:`Task.retry`, with
  its exponential backoff (``retry_backoff``, ``retry_backoff_max``, ``retry_jitter``) and
  ``max_retries``, called there inside the task's request context
  (``push_request``/``pop_request``), as Celery's autoretry would inside the trace;
- as the pool starts (before Celery's consumer takes a message), the app's loop openers run
  (:func:`register_loop_opener`: a first database connection, a first Redis connection), so that
  the first images do not pay for them;
- a warm shutdown (``SIGTERM``, ``WorkController.stop``) waits for every coroutine in flight,
  reports their ends (the hub has stopped by then: the stopping thread acknowledges them itself),
  then runs the app's loop closers (:func:`register_loop_closer`: async clients are closed on the
  loop that used them), then stops the loop. A worker that dies instead (``SIGKILL``) has
  acknowledged none of its tasks: the broker delivers them again.

A task that is not a :class:`CoroutineTask` runs as Celery would run it, on the executor.
Celery's time limits do not apply to coroutines (the upstream calls have their own timeouts).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import os
import socket
import threading
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

from billiard.einfo import ExceptionInfo
from celery import Celery, Task
from celery.app import trace as celery_trace
from celery.app.trace import loads_message
from celery.concurrency.base import BasePool, apply_target
from celery.exceptions import Retry
from celery.utils.saferepr import saferepr
from celery.utils.time import get_exponential_backoff_interval
from kombu.serialization import prepare_accept_content

from core import logcontext
from core.queue import REQUEST_ID_HEADER

log = logging.getLogger(__name__)

LoopCloser = Callable[[], Awaitable[None]]

CALLBACK_THREADS = 4
"""Threads that acknowledge tasks and send retries when Celery's consumer runs no hub (broker
round trips, off the event loop)."""

OPENERS_TIMEOUT_S = 15.0
"""How long the pool's start waits for the loop openers (a database that is down does not keep
the worker from starting: its tasks then retry as usual)."""

_closers: weakref.WeakKeyDictionary[Celery, list[LoopCloser]] = weakref.WeakKeyDictionary()
_openers: weakref.WeakKeyDictionary[Celery, list[LoopCloser]] = weakref.WeakKeyDictionary()
_host_loops: weakref.WeakKeyDictionary[Celery, asyncio.AbstractEventLoop] = weakref.WeakKeyDictionary()


def run_on_loop(app: Celery, loop: asyncio.AbstractEventLoop) -> None:
    """Run the tasks of ``app``'s worker on ``loop``, a loop running on another thread that
    outlives the worker (embedded mode: the API's), instead of on a loop of the pool's own.

    In one process the API and the worker share one interpreter lock whatever their loops: with
    a loop each, every call that lets go of the lock (each SQLite statement, each file write)
    hands it to the other loop's thread and waits to get it back, a switch of threads each
    time. On one loop the tasks take turns instead; embedded mode spends ~12 % less CPU per
    image that way (bench/README.md)."""
    _host_loops[app] = loop


def register_loop_closer(app: Celery, closer: LoopCloser) -> None:
    """Run ``closer()`` on the pool's event loop when the worker of ``app`` shuts down, after the
    last task has ended (to close async clients: database engine, Redis, HTTP)."""
    _closers.setdefault(app, []).append(closer)


def register_loop_opener(app: Celery, opener: LoopCloser) -> None:
    """Run ``opener()`` on the pool's event loop as the worker of ``app`` starts, before it takes
    a task (to open connections ahead of the first task); a failure is logged, not fatal."""
    _openers.setdefault(app, []).append(opener)


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop when it is installed (it is, from the lock), else asyncio's."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is in the lock
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class CoroutineTask(Task):  # type: ignore[misc]  # Celery ships no type information
    """A task whose work is :attr:`coroutine`, run by :class:`AsyncioPool` on its event loop.

    ``run`` (the decorated function) is not used by the pool; :func:`coroutine_task` makes it
    refuse to run elsewhere, since the coroutine's clients belong to the pool's loop."""

    coroutine: Callable[..., Awaitable[Any]]


def coroutine_task(app: Celery, coroutine: Callable[..., Awaitable[Any]], **options: Any) -> CoroutineTask:
    """Register ``coroutine`` as the task ``options["name"]`` of ``app`` (options as for
    ``app.task``), to be run by :class:`AsyncioPool`."""
    name = options["name"]

    def run(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"the task {name} is a coroutine: it runs on worker.pool.AsyncioPool only")

    run.__name__ = coroutine.__name__
    task: CoroutineTask = app.task(base=CoroutineTask, coroutine=staticmethod(coroutine), **options)(run)
    return task


class ApplyResult:
    """What Celery keeps of a task given to the pool (it only ever waits on it at shutdown)."""

    def __init__(self, future: concurrent.futures.Future[Any]) -> None:
        self._future = future

    def get(self, timeout: float | None = None) -> Any:
        return self._future.result(timeout)

    def wait(self, timeout: float | None = None) -> None:
        concurrent.futures.wait([self._future], timeout)


class AsyncioPool(BasePool):  # type: ignore[misc]  # Celery ships no type information
    """Celery's pool interface over one event loop; see the module docstring."""

    body_can_be_buffer = True
    signal_safe = False
    task_join_will_block = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._callbacks = concurrent.futures.ThreadPoolExecutor(CALLBACK_THREADS,
                                                                 thread_name_prefix="imagegate-acks")
        self._in_flight: set[concurrent.futures.Future[Any]] = set()
        self._lock = threading.Lock()
        self._accept: Any = None
        self._hostname = socket.gethostname()
        self._hub: Any = None
        """kombu's event loop of Celery's consumer, once it registers with the pool."""
        self._endings: collections.deque[tuple[Any, ...]] = collections.deque()
        """Ended tasks whose end the hub's thread has yet to report to Celery."""
        self._endings_lock = threading.Lock()
        """Held while endings are reported: by the hub's thread, or by a stopping worker."""

    # -- lifecycle (called by Celery's worker) ------------------------------------------------

    def register_with_event_loop(self, loop: Any) -> None:
        """Celery's consumer runs kombu's hub ``loop`` (an asynchronous transport): the ends of
        tasks are reported on its thread from now on."""
        self._hub = loop

    def on_start(self) -> None:
        self._accept = prepare_accept_content(self.app.conf.accept_content)
        hosted = _host_loops.get(self.app)
        loop = self.loop = hosted or new_event_loop()
        if hosted is None:
            self._thread = threading.Thread(target=self._run_loop, args=(loop,), name="imagegate-loop", daemon=True)
            self._thread.start()
        for opener in _openers.get(self.app, []):
            try:
                asyncio.run_coroutine_threadsafe(_awaited(opener, None), loop).result(timeout=OPENERS_TIMEOUT_S)
            except Exception as exc:
                log.warning("the worker's event loop could not open a client ahead of its first task (%s: %s)",
                            type(exc).__name__, (str(exc).splitlines() or [""])[0])

    @staticmethod
    def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()

    def on_stop(self) -> None:
        """Warm shutdown: let every task in flight end, report their ends, close the clients,
        stop the loop."""
        self.drain()
        self._hub = None  # the hub loops no more: what ends from now is reported by the executor
        self._report_endings()
        self._close_loop()

    def on_terminate(self) -> None:
        """Cold shutdown: cancel what runs (unacknowledged, the broker delivers it again)."""
        with self._lock:
            running = list(self._in_flight)
        for future in running:
            future.cancel()
        self._close_loop()

    def drain(self, timeout: float | None = None) -> None:
        """Wait until no task runs (those in flight end as they would)."""
        while True:
            with self._lock:
                running = list(self._in_flight)
            if not running:
                return
            log.info("waiting for %d task(s) in flight to end", len(running))
            concurrent.futures.wait(running, timeout)
            if timeout is not None:
                return

    def _close_loop(self) -> None:
        """Close the clients on the loop, then stop the loop if it is the pool's own (a host's
        loop goes on running)."""
        loop, thread = self.loop, self._thread  # no thread: the loop is a host's (run_on_loop)
        if loop is None or loop.is_closed() or (thread is not None and not thread.is_alive()):
            self._callbacks.shutdown(wait=True)
            return
        for closer in _closers.get(self.app, []):
            try:
                asyncio.run_coroutine_threadsafe(_awaited(closer, None), loop).result(timeout=30)
            except Exception:
                log.warning("closing a client of the worker's event loop failed", exc_info=True)
        # the tasks' completions are on the executor: acknowledged before the loop goes
        self._callbacks.shutdown(wait=True)
        if thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=30)

    def _get_info(self) -> dict[str, Any]:
        info: dict[str, Any] = super()._get_info()
        with self._lock:
            info.update({"max-concurrency": self.limit, "in-flight": len(self._in_flight)})
        return info

    @property
    def in_flight(self) -> int:
        with self._lock:
            return len(self._in_flight)

    # -- running a task -----------------------------------------------------------------------

    def on_apply(self, target: Callable[..., Any], args: tuple[Any, ...] | None = None,
                 kwargs: dict[str, Any] | None = None, callback: Callable[..., Any] | None = None,
                 accept_callback: Callable[..., Any] | None = None, **_: Any) -> ApplyResult:
        """Celery's ``Request.execute_using_pool`` calls this (through ``apply_async``) with its
        trace function and ``(task name, task id, request dict, body, content type, content
        encoding)``."""
        name, task_id, request, body, content_type, content_encoding = (args or ())[:6]
        task = self.app.tasks.get(name)
        if not isinstance(task, CoroutineTask) or self.loop is None:
            future = self._callbacks.submit(apply_target, target, args, kwargs, callback, accept_callback)
            return ApplyResult(future)
        if content_type:
            task_args, task_kwargs, embed = loads_message(body, content_type, content_encoding, accept=self._accept)
        else:
            task_args, task_kwargs, embed = body
        request.update({"args": task_args, "kwargs": task_kwargs, "hostname": self._hostname,
                        "is_eager": False}, **(embed or {}))
        if accept_callback is not None:
            accept_callback(os.getpid(), time.monotonic())
        started = time.monotonic()
        future = asyncio.run_coroutine_threadsafe(
            _awaited(task.coroutine, request.get(REQUEST_ID_HEADER), *task_args, **task_kwargs), self.loop)
        with self._lock:
            self._in_flight.add(future)

        def done(finished: concurrent.futures.Future[Any]) -> None:
            # on the loop's thread: hand the ending (an ack, maybe a retry) to the hub's thread,
            # or without a hub to the executor
            ending = (task, task_id, request, finished, started, callback)
            hub = self._hub
            if hub is not None:
                self._endings.append(ending)
                self._forget(finished)
                hub.call_soon(self._report_endings)  # wakes the hub; many endings, one wake-up
                return
            try:
                self._callbacks.submit(self._finish_forgetting, *ending)
            except RuntimeError:  # the executor is shut down (a cold shutdown): nothing is acked
                self._forget(finished)

        future.add_done_callback(done)
        return ApplyResult(future)

    def _forget(self, future: concurrent.futures.Future[Any]) -> None:
        with self._lock:
            self._in_flight.discard(future)

    def _report_endings(self) -> None:
        """Report every ending queued for the hub (on the hub's thread; or on the thread that
        stops the worker, once the hub has stopped)."""
        with self._endings_lock:
            while self._endings:
                self._finish(*self._endings.popleft())

    def _finish_forgetting(self, task: CoroutineTask, task_id: str, request: dict[str, Any],
                           future: concurrent.futures.Future[Any], started: float,
                           callback: Callable[..., Any] | None) -> None:
        try:
            self._finish(task, task_id, request, future, started, callback)
        finally:
            self._forget(future)

    def _finish(self, task: CoroutineTask, task_id: str, request: dict[str, Any],
                future: concurrent.futures.Future[Any], started: float, callback: Callable[..., Any] | None) -> None:
        """Report the coroutine's end to Celery's request, as ``celery.app.trace`` would."""
        try:
            if future.cancelled():
                return  # cold shutdown: left unacknowledged, delivered again
            runtime = time.monotonic() - started
            error = future.exception()
            if callback is None:
                return
            # the trace's own log lines, so that a worker's log reads the same whatever its pool
            if error is None:
                shown = saferepr(future.result())
                celery_trace.info(celery_trace.LOG_SUCCESS, {"id": task_id, "name": task.name,
                                                             "return_value": shown, "runtime": runtime})
                callback((0, shown, runtime))
                return
            if task.autoretry_for and isinstance(error, tuple(task.autoretry_for)):
                error = self._retry(task, request, error)
            if isinstance(error, Retry):
                celery_trace.info(celery_trace.LOG_RETRY, {"id": task_id, "name": task.name, "exc": str(error)})
            else:
                celery_trace.logger.error("Task %s[%s] raised unexpected: %r", task.name, task_id, error,
                                          exc_info=(type(error), error, error.__traceback__))
            callback((1, ExceptionInfo((type(error), error, error.__traceback__)), runtime))
        except Exception:
            log.exception("task %s[%s]: reporting its end to Celery failed", task.name, task_id)

    @staticmethod
    def _retry(task: CoroutineTask, request: dict[str, Any], error: BaseException) -> BaseException:
        """Celery's autoretry for ``error``: :meth:`Task.retry` with exponential backoff, which
        sends the task again (returning the :class:`Retry` it raises) or, past ``max_retries``,
        gives ``error`` back."""
        task.push_request(request, called_directly=False)
        try:
            backoff = task.retry_backoff
            countdown = None
            if backoff:
                countdown = get_exponential_backoff_interval(
                    factor=int(backoff), retries=task.request.retries, maximum=task.retry_backoff_max,
                    full_jitter=task.retry_jitter)
            task.retry(exc=error, countdown=countdown, **(getattr(task, "retry_kwargs", None) or {}))
        except BaseException as raised:  # Retry (sent again), or the error past max_retries
            outcome: BaseException = raised
            return outcome
        finally:
            task.pop_request()
        return error  # pragma: no cover - Task.retry always raises


async def _awaited(coroutine: Callable[..., Awaitable[Any]], request_id: str | None, *args: Any,
                   **kwargs: Any) -> Any:
    # the id of the request that made the task, from its headers (api/enqueue.py), on its log lines
    with logcontext.bound(request_id=request_id):
        return await coroutine(*args, **kwargs)
