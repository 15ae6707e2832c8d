"""The partial-image log between the worker and a streaming request: what a publisher appends
(core.events: a Redis stream, or the in-process bus) a feed reads back from the start, in order,
including drafts appended before the feed was opened, and a feed's wait wakes on a new draft."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid

import pytest
import redis
import redis.asyncio as aioredis

from api.dialects.openai_images.stream import InProcessPartialFeed, PartialFeed, RedisPartialFeed
from core.events import PARTIALS_TTL_S, InProcessEventBus, PartialImage, RedisEventPublisher, partials_key


def _draft(job_id: str, k: int) -> PartialImage:
    return PartialImage(job_id=job_id, index=0, partial_index=k, object_key=f"xx/{job_id}/0-1-partial-{k}.png",
                        output_format="png", size="1024x1024", quality="low", background="opaque", created_at=k)


async def _follow(feed: PartialFeed, publish: object, job_id: str) -> tuple[list[PartialImage], list[float]]:
    """Drafts 0 and 1 appended before the feed reads, 2 and 3 while it waits (0.2 s apart)."""
    assert callable(publish)
    publish(_draft(job_id, 0))
    publish(_draft(job_id, 1))

    def later() -> None:
        for k in (2, 3):
            time.sleep(0.2)
            publish(_draft(job_id, k))

    threading.Thread(target=later, daemon=True).start()
    got = await feed.drain()
    started, woke = time.monotonic(), []
    while len(got) < 4:
        await feed.wait(5.0)
        woke.append(time.monotonic() - started)
        got += await feed.drain()
    feed.close()
    return got, woke


def test_the_in_process_log_is_read_from_its_start_and_wakes_its_reader() -> None:
    bus = InProcessEventBus()

    async def run() -> tuple[list[PartialImage], list[float]]:
        return await _follow(InProcessPartialFeed(bus, "job_a"), bus.publish_partial, "job_a")

    got, woke = asyncio.run(run())
    assert [d.partial_index for d in got] == [0, 1, 2, 3]
    assert woke[0] < 1.0  # woken by the draft, not by the wait's end
    # other jobs' drafts are not this job's
    bus.publish_partial(_draft("job_b", 0))
    assert bus.partials_after("job_a", 4) == ([], 4)


def test_the_redis_log_is_read_from_its_start_and_wakes_its_reader(redis_url: str) -> None:
    job_id = f"job_{uuid.uuid4().hex}"
    sync = redis.Redis.from_url(redis_url)
    publisher = RedisEventPublisher(sync)

    async def run() -> tuple[list[PartialImage], list[float]]:
        client = aioredis.Redis.from_url(redis_url)
        try:
            return await _follow(RedisPartialFeed(client, job_id), publisher.publish_partial, job_id)
        finally:
            await client.aclose()

    try:
        got, woke = asyncio.run(run())
        assert got == [_draft(job_id, k) for k in range(4)]
        assert woke[0] < 1.0
        assert 0 < int(sync.ttl(partials_key(job_id))) <= PARTIALS_TTL_S  # the log does not outlive its use
    finally:
        sync.delete(partials_key(job_id))
        sync.close()


def test_a_lost_redis_costs_a_draft_not_the_worker() -> None:
    publisher = RedisEventPublisher(redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2))
    publisher.publish_partial(_draft("job_c", 0))  # logged, not raised


@pytest.mark.parametrize("k", [0, 3])
def test_a_partial_image_survives_its_json(k: int) -> None:
    assert PartialImage.from_json(_draft("job_d", k).to_json()) == _draft("job_d", k)
