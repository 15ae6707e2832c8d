"""The synchronous answer's hot path, on the embedded app in this process: each dialect's
base64 is the stored image's, spliced into the answer with an exact Content-Length and never
gzipped, and the waiting request does not read the job before the worker's event."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest

from api.state import AppState
from tests.inproc.gateway import Gateway, Key, running_gateway
from tests.orm_writes import orm_writes

pytestmark = pytest.mark.anyio
GZIP = {"Accept-Encoding": "gzip, deflate"}  # what the SDKs send


@pytest.fixture(scope="module")
async def gw(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Gateway]:
    async with running_gateway(tmp_path_factory.mktemp("hot-path")) as gateway:
        yield gateway


def stored(gw: Gateway, job_id: str) -> list[bytes]:
    """The job's delivered images as the store holds them, in order."""
    rows = gw.rows(
        "SELECT object_key FROM job_images WHERE job_id = :job AND status = 'succeeded' ORDER BY \"index\"", job=job_id
    )
    return [(gw.settings.images_dir / row["object_key"]).read_bytes() for row in rows]


def assert_spliced(response: Any) -> Any:
    """An answer sent whole, with its exact length, not compressed; its JSON."""
    assert response.status_code == 200, response.text
    assert "content-encoding" not in response.headers
    assert int(response.headers["content-length"]) == len(response.content)
    assert b"imagegate-b64-" not in response.content
    return response.json()


async def test_openai_images_b64_is_the_stored_image(gw: Gateway) -> None:
    key = await gw.create_key()
    response = await gw.generate(key, {"model": "demo", "prompt": "three boats", "n": 3, "size": "64x64"}, **GZIP)
    data = assert_spliced(response)["data"]
    images = stored(gw, response.headers["x-imagegate-job-id"])
    assert [base64.b64decode(d["b64_json"]) for d in data] == images
    assert len(images) == 3 and all(images)


async def test_chat_anthropic_gemini_and_the_job_carry_the_stored_image(gw: Gateway) -> None:
    key = await gw.create_key()
    chat = await gw.http.post(
        "/v1/chat/completions",
        headers={**key.auth, **GZIP},
        json={"model": "demo", "messages": [{"role": "user", "content": "a red kite"}]},
    )
    url = assert_spliced(chat)["choices"][0]["message"]["images"][0]["image_url"]["url"]
    prefix, b64 = url.split(",", 1)
    assert prefix == "data:image/png;base64"
    assert [base64.b64decode(b64)] == stored(gw, chat.headers["x-imagegate-job-id"])

    gemini = await gw.http.post(
        "/v1beta/models/demo:generateContent",
        headers={**key.auth, **GZIP},
        json={"contents": [{"parts": [{"text": "a blue kite"}]}]},
    )
    parts = assert_spliced(gemini)["candidates"][0]["content"]["parts"]
    inline = [p["inlineData"]["data"] for p in parts if "inlineData" in p]
    assert [base64.b64decode(d) for d in inline] == stored(gw, gemini.headers["x-imagegate-job-id"])

    message = await gw.http.post(
        "/v1/messages",
        headers={**key.auth, **GZIP, "anthropic-version": "2023-06-01"},
        json={"model": "demo", "max_tokens": 64, "messages": [{"role": "user", "content": "a green kite"}]},
    )
    body = assert_spliced(message)
    text = json.dumps(body)
    [image] = stored(gw, message.headers["x-imagegate-job-id"])
    assert base64.b64encode(image).decode() in text

    job_id = gemini.headers["x-imagegate-job-id"]
    job = await gw.http.get(f"/v1/jobs/{job_id}?include=b64_json", headers={**key.auth, **GZIP})
    assert [base64.b64decode(i["b64_json"]) for i in assert_spliced(job)["images"]] == stored(gw, job_id)


async def test_streams_expand_the_images(gw: Gateway) -> None:
    key = await gw.create_key()
    async with gw.http.stream(
        "POST",
        "/v1beta/models/demo:streamGenerateContent?alt=sse",
        headers=key.auth,
        json={"contents": [{"parts": [{"text": "two kites"}]}], "generationConfig": {"candidateCount": 2}},
    ) as response:
        assert response.status_code == 200
        events = [
            json.loads(line[len("data: ") :])
            for line in (await response.aread()).decode().splitlines()
            if line.startswith("data: ")
        ]
        job_id = response.headers["x-imagegate-job-id"]
    inline = [
        p["inlineData"]["data"]
        for e in events
        for c in e.get("candidates", [])
        for p in c["content"]["parts"]
        if "inlineData" in p
    ]
    assert [base64.b64decode(d) for d in inline] == stored(gw, job_id)


async def test_the_waiting_request_reads_nothing_before_the_job_changes(gw: Gateway) -> None:
    """The job is announced to the waiter before it is enqueued: no read on entry. The embedded
    worker's events carry no status yet, so each is a change of unknown effect: at most one read
    per event the worker published (the entry read would make one more per request)."""
    state: AppState = gw.app.state.imagegate
    assert state.event_bus is not None
    events: list[str] = []
    unsubscribe = state.event_bus.subscribe(events.append)
    key: Key = await gw.create_key()
    before = state.waiter.database_checks
    try:
        for _ in range(3):
            response = await gw.generate(key, {"model": "demo", "prompt": "one", "size": "64x64"})
            assert response.status_code == 200
    finally:
        unsubscribe()
    assert events
    assert state.waiter.database_checks - before <= len(events)


async def test_a_request_builds_no_insert_or_update_through_the_orm(gw: Gateway) -> None:
    """On SQLite a request's writes (the job and its images, the claim, the record, the ledger)
    are statements compiled once per shape (core/repo/binds.py), not ORM statements built and
    run for each request, which cost ~0.5 ms of CPU apiece."""
    key = await gw.create_key()
    with orm_writes() as built:
        response = await gw.generate(key, {"model": "demo", "prompt": "two boats", "n": 2, "size": "64x64"})
    assert len(assert_spliced(response)["data"]) == 2
    assert built == []


async def test_the_in_process_worker_runs_its_tasks_on_the_apis_event_loop(gw: Gateway) -> None:
    # one loop for both: with a loop each, every SQLite statement and file write would pass the
    # interpreter lock to the other loop's thread and wait to get it back (worker/pool.py)
    from worker import celery_app

    key = await gw.create_key()
    response = await gw.generate(key, {"model": "demo", "prompt": "one loop", "size": "64x64"})
    assert response.status_code == 200, response.text
    embedded = celery_app._embedded_running
    assert embedded is not None and embedded.pool is not None
    assert embedded.pool.loop is asyncio.get_running_loop()
    assert "imagegate-loop" not in {thread.name for thread in threading.enumerate()}


async def test_a_request_on_sqlite_sets_no_isolation_level(gw: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    # reads on SQLite need no autocommit connection (its driver begins a transaction before a
    # write only): setting it on checkout and back on return was two PRAGMAs per read
    from core.sqlite_inline import InlineConnection

    sent: list[str] = []
    execute = InlineConnection._execute

    async def recording(self: InlineConnection, fn: Any, *args: Any, **kwargs: Any) -> Any:
        if args and isinstance(args[0], str):
            sent.append(args[0])
        return await execute(self, fn, *args, **kwargs)

    key = await gw.create_key()
    monkeypatch.setattr(InlineConnection, "_execute", recording)
    response = await gw.generate(key, {"model": "demo", "prompt": "no pragmas", "size": "64x64"})
    assert response.status_code == 200, response.text
    (await gw.http.get(f"/jobs/{response.headers['x-imagegate-job-id']}", headers=key.auth)).raise_for_status()
    assert any(s.startswith("SELECT") for s in sent) and any(s.startswith("INSERT") for s in sent)
    assert not [s for s in sent if "PRAGMA" in s.upper()]


async def test_the_in_process_worker_shares_the_apis_database_engine(gw: Gateway) -> None:
    from worker import celery_app

    embedded = celery_app._embedded_running
    assert embedded is not None
    state = gw.app.state.imagegate
    assert embedded.runtime.engine is state.engine and not embedded.runtime.owns_engine
