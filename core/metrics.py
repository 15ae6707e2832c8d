"""Prometheus metrics of imagegate (prometheus-client), shared by the API and the workers.

Every process counts into the metrics below, in memory; nothing is sent anywhere on the hot path.
``GET /metrics`` (``api/routes/metrics.py``) exposes them, with the values read at scrape time
(queue depth, circuits). Several processes on one host (``imagegate serve --workers N``, workers
beside the API) share a directory named by prometheus-client's own ``PROMETHEUS_MULTIPROC_DIR``:
each process writes its values there, and :func:`registry` sums them (prometheus-client's
multi-process mode: https://prometheus.github.io/client_python/multiprocess/). The variable must
be set before the processes start, on an empty directory. A worker on a host of its own serves
its metrics itself (``IMAGEGATE_WORKER_METRICS_PORT``).

Label values come from small fixed sets (dialects, route templates, statuses, model ids,
providers); a labelled child is looked up once and kept (:class:`Children`), so counting is a
dict lookup and an add.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Hashable
from typing import Generic, TypeVar

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

M = TypeVar("M", bound=MetricWrapperBase)

MULTIPROC_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
"""prometheus-client's own variable (read by the library when it is imported)."""

LATENCY_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 20, 30, 45, 60, 90, 120, 180, 300, 600)
"""Seconds: an image takes 5-130 s upstream; a queue wait is anything from nothing to minutes."""


class Children(Generic[M]):
    """The labelled children of one metric, each made once."""

    def __init__(self, metric: M) -> None:
        self.metric = metric
        self._children: dict[tuple[Hashable, ...], M] = {}
        self._lock = threading.Lock()

    def __call__(self, *labels: str) -> M:
        child = self._children.get(labels)
        if child is None:
            with self._lock:
                child = self._children.setdefault(labels, self.metric.labels(*labels))
        return child


REQUESTS = Children(
    Counter(
        "imagegate_http_requests",
        "HTTP requests answered, by dialect, route template and status.",
        ["dialect", "route", "status"],
    )
)
JOBS = Children(
    Counter(
        "imagegate_jobs",
        "Jobs by status: 'submitted' when accepted, then the status each ends with.",
        ["status", "model"],
    )
)
IMAGES = Children(
    Counter(
        "imagegate_images",
        "Images ended, by status and the model that served them (the job's model for images that "
        "no attempt ended: canceled, or failed out of attempts).",
        ["status", "model"],
    )
)
UPSTREAM_CALLS = Children(
    Counter(
        "imagegate_upstream_calls",
        "HTTP calls to upstreams, by provider, status ('timeout', 'error' when none) and whether the call was a retry.",
        ["provider", "status", "retry"],
    )
)
BILLED = Children(
    Counter("imagegate_billed_microdollars", "Micro-dollars charged for delivered images, by model.", ["model"])
)
QUEUE_WAIT = Histogram(
    "imagegate_queue_wait_seconds",
    "From an image's enqueueing to the start of the attempt that ended it.",
    buckets=LATENCY_BUCKETS,
)
UPSTREAM_LATENCY = Children(
    Histogram(
        "imagegate_upstream_seconds", "One upstream HTTP call, by provider.", ["provider"], buckets=LATENCY_BUCKETS
    )
)
TOTAL_LATENCY = Children(
    Histogram(
        "imagegate_image_seconds",
        "From a job's submission to one of its images' end, by status.",
        ["status"],
        buckets=LATENCY_BUCKETS,
    )
)
IN_FLIGHT = Gauge(
    "imagegate_images_in_flight", "Images whose attempt is running in a worker.", multiprocess_mode="livesum"
)


def multiprocess() -> bool:
    return MULTIPROC_DIR_VARIABLE in os.environ


def registry() -> CollectorRegistry:
    """The registry to expose: every process's values summed in multi-process mode, else this
    process's own."""
    if not multiprocess():
        return REGISTRY
    summed = CollectorRegistry()
    MultiProcessCollector(summed)  # type: ignore[no-untyped-call]
    return summed


def process_exited(pid: int) -> None:
    """Drop the live gauges of a process that ended (multi-process mode)."""
    if multiprocess():
        mark_process_dead(pid)  # type: ignore[no-untyped-call]


def count_settled(status: str, model: str, images: int, *, job_ended: str | None) -> None:
    """``images`` of a job on ``model`` ended as ``status`` without an attempt's outcome (canceled,
    failed out of attempts), once their transaction committed; ``job_ended``: the job's terminal
    status if they ended it."""
    if images:
        IMAGES(status, model).inc(images)
    if job_ended is not None:
        JOBS(job_ended, model).inc()
