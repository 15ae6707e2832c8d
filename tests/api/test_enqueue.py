"""The API puts a task on Redis itself (one LPUSH, on its event loop): the entry must be what
Celery's own client would have published, and a real Celery worker must run it."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from typing import Any

import pytest
import redis

from api.enqueue import Enqueuer
from core import logcontext
from core.config import Settings
from core.queue import GENERATE_IMAGE_TASK, REQUEST_ID_HEADER

pytestmark = pytest.mark.integration

DB = 7


def _entries(client: redis.Redis, queue: str) -> list[dict[str, Any]]:
    return [json.loads(raw) for raw in client.lrange(queue, 0, -1)]


def _without_ids(entry: dict[str, Any]) -> dict[str, Any]:
    """An entry with its random parts (task id, delivery tag, origin) left out."""
    headers = {k: v for k, v in entry["headers"].items() if k not in ("id", "root_id", "origin")}
    properties = {k: v for k, v in entry["properties"].items()
                  if k not in ("correlation_id", "delivery_tag")}
    return {**entry, "headers": headers, "properties": properties,
            "body": json.loads(base64.b64decode(entry["body"]))}


def test_the_entry_is_the_one_celery_publishes(redis_url: str) -> None:
    queue = f"enqueue-{uuid.uuid4().hex[:8]}"
    settings = Settings(redis_url=f"{redis_url}/{DB}", queue=queue, _env_file=None)  # type: ignore[call-arg]
    client = redis.Redis.from_url(f"{redis_url}/{DB}")
    enqueuer = Enqueuer(settings)
    try:
        enqueuer.send_sync(["img_celery"], request_id="req_1")
        by_celery = _entries(client, queue)
        client.delete(queue)

        async def send() -> bool:
            try:
                with logcontext.bound(request_id="req_1"):
                    return await enqueuer.send(["img_a", "img_b"])
            finally:
                await enqueuer.aclose()

        assert asyncio.run(send())
        ours = _entries(client, queue)
    finally:
        client.delete(queue, f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}")
        client.close()

    assert len(by_celery) == 1 and len(ours) == 2
    expected = _without_ids(by_celery[0])
    for entry, image_id in zip(reversed(ours), ["img_a", "img_b"], strict=True):  # LPUSH: the last is first
        assert entry["headers"]["id"] == entry["headers"]["root_id"] == entry["properties"]["correlation_id"]
        assert entry["properties"]["delivery_tag"] and entry["headers"]["task"] == GENERATE_IMAGE_TASK
        got = _without_ids(entry)
        assert got["body"][0] == [image_id]
        assert got["headers"]["argsrepr"] == repr([image_id])
        assert got["headers"][REQUEST_ID_HEADER] == "req_1"
        assert {**got, "body": None, "headers": {**got["headers"], "argsrepr": None}} == {
            **expected, "body": None, "headers": {**expected["headers"], "argsrepr": None}}
        assert got["body"][1:] == expected["body"][1:]


def test_a_broker_that_is_down_is_reported_not_raised() -> None:
    settings = Settings(redis_url="redis://127.0.0.1:9/0", queue="nowhere", _env_file=None)  # type: ignore[call-arg]
    enqueuer = Enqueuer(settings)

    async def send() -> bool:
        try:
            return await enqueuer.send(["img_x"])
        finally:
            await enqueuer.aclose()

    assert asyncio.run(send()) is False
