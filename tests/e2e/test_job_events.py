"""``GET /v1/jobs/{id}/events``: a job's progress as server-sent events, read by a real HTTP client
to the end of the stream, in both modes."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.e2e.test_jobs import poll
from tests.fakes.upstream import FakeUpstream
from tests.harness import Stack, priced_demo
from tests.outage import PostgresServer, wait_until

pytestmark = pytest.mark.integration


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@dataclass
class Read:
    events: list[tuple[str, dict[str, Any]]]
    keep_alives: int
    seconds: float

    def names(self) -> list[str]:
        return [name for name, _ in self.events]

    def of_image(self, index: int) -> list[str]:
        return [name for name, data in self.events if name.startswith("image.") and data["index"] == index]


def read_events(base_url: str, key: str, job_id: str, *, timeout: float = 60,
                opened: threading.Event | None = None) -> Read:
    """Read the stream until the server closes it: its events (name, JSON data) and comments;
    ``opened`` is set once the stream answered 200."""
    events: list[tuple[str, dict[str, Any]]] = []
    keep_alives = 0
    started = time.monotonic()
    with httpx.stream("GET", f"{base_url}/v1/jobs/{job_id}/events", headers=_auth(key), timeout=timeout) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        if opened is not None:
            opened.set()
        name, data = "message", ""
        for line in response.iter_lines():
            if line.startswith(":"):
                keep_alives += 1
            elif line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                data += line.removeprefix("data: ")
            elif line == "" and data:
                events.append((name, json.loads(data)))
                name, data = "message", ""
    return Read(events, keep_alives, time.monotonic() - started)


def test_a_job_is_followed_image_by_image_to_its_end(slow: Stack) -> None:
    key = slow.create_key(f"events-{slow.mode}")
    submitted = httpx.post(
        f"{slow.base_url}/v1/jobs", headers=_auth(key), json={"prompt": "three lamps", "n": 3, "size": "96x96"}
    )
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["id"]

    read = read_events(slow.base_url, key, job_id)

    names = read.names()
    assert names[0] == "job.snapshot" and names[-1] == "job.ended"
    snapshot, ended = read.events[0][1], read.events[-1][1]
    assert snapshot["id"] == job_id and snapshot["progress"]["total"] == 3
    for index in range(3):
        # each image's start is heard (the snapshot may have caught it already running), then its end
        said = read.of_image(index)
        assert said[-1] == "image.succeeded", said
        started = said[:-1] == ["image.running"] or snapshot["images"][index]["status"] == "running"
        assert started, (said, snapshot["images"][index])
    done = [data for name, data in read.events if name == "image.succeeded"]
    assert sorted(d["index"] for d in done) == [0, 1, 2]
    for image in done:
        assert image["job_id"] == job_id and image["cost_usd"] == "0.040000"
        fetched = httpx.get(image["url"])
        assert fetched.status_code == 200 and Image.open(io.BytesIO(fetched.content)).size == (96, 96)
    assert ended["status"] == "succeeded" and ended["cost_usd"] == "0.120000"
    assert ended["progress"] == {"total": 3, "done": 3, "succeeded": 3, "failed": 0, "canceled": 0}
    # the images take 0.6 s each: keep-alives (every 0.25 s) were sent while they were made
    assert read.keep_alives >= 1
    # the stream ends as the job does, not on a timeout
    assert read.seconds < 20


def test_an_ended_job_answers_its_snapshot_and_end_at_once(slow: Stack) -> None:
    key = slow.create_key(f"events-ended-{slow.mode}")
    job_id = httpx.post(f"{slow.base_url}/v1/jobs", headers=_auth(key), json={"prompt": "one", "size": "64x64"}).json()[
        "id"
    ]
    assert poll(slow, key, job_id, until={"succeeded"})["status"] == "succeeded"
    read = read_events(slow.base_url, key, job_id)
    assert read.names() == ["job.snapshot", "job.ended"]
    assert read.events[1][1]["status"] == "succeeded" and read.events[1][1]["images"][0]["url"]


def test_events_are_only_for_the_key_that_made_the_job(slow: Stack) -> None:
    owner = slow.create_key(f"events-owner-{slow.mode}")
    other = slow.create_key(f"events-other-{slow.mode}")
    job_id = httpx.post(
        f"{slow.base_url}/v1/jobs", headers=_auth(owner), json={"prompt": "mine", "size": "64x64"}
    ).json()["id"]
    for path in (f"/v1/jobs/{job_id}/events", f"/jobs/{job_id}/events"):
        refused = httpx.get(slow.base_url + path, headers=_auth(other))
        assert refused.status_code == 404 and refused.json()["error"]["code"] == "job_not_found"
    assert httpx.get(f"{slow.base_url}/v1/jobs/job_nosuchjob/events", headers=_auth(owner)).status_code == 404
    assert httpx.get(f"{slow.base_url}/v1/jobs/{job_id}/events").status_code == 401


def test_a_reader_who_leaves_does_not_cancel_the_job(slow: Stack) -> None:
    key = slow.create_key(f"events-leave-{slow.mode}")
    job_id = httpx.post(
        f"{slow.base_url}/v1/jobs", headers=_auth(key), json={"prompt": "stay", "n": 2, "size": "64x64"}
    ).json()["id"]
    with httpx.stream("GET", f"{slow.base_url}/v1/jobs/{job_id}/events", headers=_auth(key), timeout=30) as response:
        assert next(response.iter_lines()) == "event: job.snapshot"
    job = poll(slow, key, job_id, until={"succeeded", "partial", "failed", "canceled"})
    assert job["status"] == "succeeded" and job["progress"]["succeeded"] == 2


def test_a_failed_image_is_said_with_its_error(gw: Stack, key: str, upstream: FakeUpstream) -> None:
    upstream.add_fault("gemini", "safety_prompt", times=1, delay_s=0.3)
    job_id = httpx.post(
        f"{gw.base_url}/v1/jobs",
        headers=_auth(key),
        json={"model": "gemini-3-pro-image", "prompt": "half forbidden", "n": 2},
    ).json()["id"]
    read = read_events(gw.base_url, key, job_id)
    failed = [data for name, data in read.events if name == "image.failed"]
    assert len(failed) == 1 and failed[0]["error"]["code"] == "moderation_blocked"
    assert read.names()[-1] == "job.ended" and read.events[-1][1]["status"] == "partial"


def test_a_stream_goes_on_through_a_database_outage(
    make_stack: Callable[..., Stack], own_postgres: PostgresServer, tmp_path_factory: pytest.TempPathFactory
) -> None:
    stack = make_stack(
        "distributed",
        IMAGEGATE_DATABASE_URL=own_postgres.create_database(),
        **priced_demo(tmp_path_factory.mktemp("prices")),
        IMAGEGATE_DEMO_LATENCY_S="2",
        IMAGEGATE_EVENTS_KEEPALIVE_S="0.5",
        IMAGEGATE_IMAGE_LEASE_S="30",
        IMAGEGATE_AUTH_CACHE_S="60",
    )
    try:
        key = stack.create_key("events-db-down")
        job_id = httpx.post(
            f"{stack.base_url}/v1/jobs",
            headers=_auth(key),
            json={"prompt": "through an outage", "n": 2, "size": "64x64"},
        ).json()["id"]
        read: list[Read] = []
        opened = threading.Event()
        reader = threading.Thread(target=lambda: read.append(
            read_events(stack.base_url, key, job_id, timeout=30, opened=opened)))
        reader.start()
        assert opened.wait(20), "the stream did not open"  # before the outage: the stream is its own
        wait_until(
            lambda: any(r["status"] == "running" for r in stack.rows("SELECT status FROM job_images")),
            20,
            "the images running",
        )
        with own_postgres.down():
            time.sleep(4)  # the images end meanwhile; their records wait for the database
        reader.join(timeout=90)
        assert read, "the stream did not end"
        names = read[0].names()
        assert names[0] == "job.snapshot" and names[-1] == "job.ended", names
        assert read[0].events[-1][1]["status"] == "succeeded"
        assert read[0].keep_alives >= 4  # kept alive while the database was away
        assert stack.money("events-db-down").charged == 2 * 40_000
    finally:
        stack.stop()
