"""The bench's fake upstream counts the calls it holds at once: scenarios d and e read their
"upstream calls in flight at the peak" from it."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from bench import fake
from tests.pngs import blank_png


def test_stats_count_calls_and_the_peak_in_flight() -> None:
    stats = fake.Stats()
    stats.enter("openai_generations")
    stats.enter("gemini")
    stats.enter("gemini")
    stats.leave()
    stats.enter("gemini")
    stats.leave()
    stats.leave()
    assert (stats.in_flight, stats.peak_in_flight) == (1, 3)
    assert stats.calls == {"openai_generations": 1, "gemini": 3}
    stats.reset()
    assert (stats.in_flight, stats.peak_in_flight, stats.calls) == (0, 0, {})


def test_delayed_calls_are_in_flight_together_and_counted_once_each() -> None:
    async def scenario() -> dict[str, Any]:
        transport = httpx.ASGITransport(app=fake.create_app(png=blank_png(8, 8)))
        async with httpx.AsyncClient(transport=transport, base_url="http://fake") as client:
            openai = {"authorization": f"Bearer {fake.OPENAI_KEY}"}
            gemini = {"x-goog-api-key": fake.GEMINI_KEY}
            calls = [client.post("/v1/images/generations", headers=openai,
                                 json={"prompt": "a fox [delay=0.3]", "n": 1}) for _ in range(3)]
            calls.append(client.post("/v1beta/models/gemini-3-pro-image:generateContent", headers=gemini,
                                     json={"contents": [{"parts": [{"text": "a fox [delay=0.3]"}]}]}))
            calls.append(client.post("/v1/images/generations", headers={"authorization": "Bearer wrong"},
                                     json={"prompt": "refused, not counted", "n": 1}))
            answers = await asyncio.gather(*calls)
            assert [a.status_code for a in answers] == [200, 200, 200, 200, 401]
            stats: dict[str, Any] = (await client.get("/_bench/stats")).json()
            await client.post("/_bench/reset")
            stats["after_reset"] = (await client.get("/_bench/stats")).json()
            return stats

    stats = asyncio.run(scenario())
    assert stats["calls"] == {"openai_generations": 3, "gemini": 1}
    assert stats["peak_in_flight"] == 4
    assert stats["in_flight"] == 0
    assert stats["after_reset"]["calls"] == {} and stats["after_reset"]["peak_in_flight"] == 0
