"""Every provider family end to end: the openai SDK -> imagegate -> a real worker -> the fake
upstream (a real HTTP server speaking Gemini, Vertex, Imagen, OpenAI Images and a chat gateway),
with its faults: retries, Retry-After, fallbacks, safety blocks, broken answers, hangs."""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import httpx
import openai
import pytest
import sqlalchemy as sa
from PIL import Image

from tests.e2e.test_jobs import poll
from tests.fakes.upstream import FakeUpstream
from tests.harness import Stack

pytestmark = pytest.mark.integration

@pytest.fixture(autouse=True)
def _checked(upstream: FakeUpstream) -> None:
    """Every test here starts with a reset fake and fails if a request broke a wire format."""


def _image(b64: str | None) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(b64 or "")))
    image.load()
    return image


def _job_images(gw: Stack, key: str, job_id: str) -> list[dict[str, Any]]:
    job = httpx.get(f"{gw.base_url}/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {key}"}).json()
    return list(job["images"])


@pytest.mark.parametrize(("model", "endpoint", "size"), [
    ("gemini-3-pro-image", "gemini", (1376, 768)),
    ("gemini-3.1-flash-image", "gemini", (1376, 768)),
    ("gemini-2.5-flash-image", "gemini", (1344, 768)),
    ("vertex/gemini-3-pro-image", "vertex_gemini", (1376, 768)),
    ("gateway/gemini-3-pro-image", "chat", (1376, 768)),
    ("imagen-4.0-generate-001", "imagen", (1408, 768)),
])
def test_each_google_family_generates_at_16_9(client: openai.OpenAI, fake: FakeUpstream, model: str,
                                              endpoint: str, size: tuple[int, int]) -> None:
    result = client.images.generate(model=model, prompt="a harbour at dawn", extra_body={"aspect_ratio": "16:9"})
    image = _image(result.data[0].b64_json)
    assert (image.format, image.size) == ("PNG", size)
    assert fake.count(endpoint) == 1


@pytest.mark.parametrize("model", ["gpt-image-2", "gpt-image-1.5", "gpt-image-1-mini", "gpt-image-2.5-flare"])
def test_openai_models_generate_n_in_one_call(client: openai.OpenAI, fake: FakeUpstream, model: str) -> None:
    result = client.images.generate(model=model, prompt="four lamps", n=4, size="1536x1024",
                                    output_format="jpeg", quality="low")
    assert len(result.data) == 4
    assert {(_image(d.b64_json).format, _image(d.b64_json).size) for d in result.data} == {("JPEG", (1536, 1024))}
    assert fake.count("openai_generations") == 1
    sent = fake.calls[-1].json or {}
    assert sent["n"] == 4 and sent["size"] == "1536x1024" and sent["output_format"] == "jpeg"
    assert result.usage is not None and result.usage.output_tokens > 0


def test_retired_ids_route_to_their_successors(client: openai.OpenAI, fake: FakeUpstream) -> None:
    client.images.generate(model="dall-e-3", prompt="x", size="1792x1024", quality="hd")
    assert fake.calls[-1].endpoint == "openai_generations"
    assert fake.calls[-1].json and fake.calls[-1].json["model"] == "gpt-image-1.5"
    assert fake.calls[-1].json["size"] == "1536x1024" and fake.calls[-1].json["quality"] == "high"
    client.images.generate(model="google/gemini-3-pro-image-preview", prompt="x")
    assert fake.calls[-1].model == "gemini-3-pro-image"


def test_n4_on_gemini_is_four_calls(client: openai.OpenAI, fake: FakeUpstream) -> None:
    result = client.images.generate(model="gemini-3.1-flash-image", prompt="four boats", n=4)
    assert len(result.data) == 4
    assert fake.count("gemini", model="gemini-3.1-flash-image") == 4


def test_one_call_of_four_failing_permanently_gives_three_images(
    gw: Stack, key: str, client: openai.OpenAI, fake: FakeUpstream
) -> None:
    fake.add_fault("gemini", "status", status=400, times=1)
    raw = client.images.with_raw_response.generate(model="gemini-3.1-flash-image", prompt="3 of 4", n=4)
    result = raw.parse()
    assert len(result.data) == 3
    assert raw.headers["x-imagegate-images"] == "3/4"
    images = _job_images(gw, key, raw.headers["x-imagegate-job-id"])
    failed = [i for i in images if i["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["error"]["code"] == "upstream_invalid_request"
    assert "refused" in failed[0]["error"]["message"]
    assert fake.count("gemini") == 4  # a 400 is not retried


def test_429_with_retry_after_is_retried_after_the_delay(client: openai.OpenAI, fake: FakeUpstream) -> None:
    fake.add_fault("gemini", "status", status=429, headers={"Retry-After": "1"}, times=1)
    result = client.images.generate(model="gemini-3-pro-image", prompt="patience")
    assert len(result.data) == 1
    calls = [c for c in fake.calls if c.endpoint == "gemini"]
    assert [c.status for c in calls] == [429, 200]
    assert calls[1].time - calls[0].time >= 1.0


def test_spent_retries_fall_back_to_the_next_model_and_it_is_recorded(
    gw: Stack, key: str, client: openai.OpenAI, fake: FakeUpstream
) -> None:
    fake.add_fault("gemini", "status", status=503, model="gemini-3-pro-image", times=3)
    raw = client.images.with_raw_response.generate(model="gemini-3-pro-image", prompt="fall back")
    assert len(raw.parse().data) == 1
    assert fake.count("gemini") == 3 and fake.count("vertex_gemini") == 1
    assert raw.headers["x-imagegate-served-by"] == "vertex/gemini-3-pro-image"
    image = _job_images(gw, key, raw.headers["x-imagegate-job-id"])[0]
    assert (image["model"], image["provider"]) == ("vertex/gemini-3-pro-image", "vertex_gemini")


def test_a_blocked_prompt_is_a_400_in_the_openai_dialect_and_called_once(
    client: openai.OpenAI, fake: FakeUpstream
) -> None:
    fake.add_fault("gemini", "safety_prompt", times=5)
    with pytest.raises(openai.BadRequestError) as caught:
        client.images.generate(model="gemini-3-pro-image", prompt="something forbidden")
    body = caught.value.body
    assert isinstance(body, dict) and body["code"] == "moderation_blocked"
    assert body["type"] == "image_generation_user_error"
    assert fake.count("gemini") == 1 and fake.count("vertex_gemini") == 0


def test_openai_moderation_block_is_a_content_policy_error(client: openai.OpenAI, fake: FakeUpstream) -> None:
    fake.add_fault("openai_generations", "moderation", times=5)
    with pytest.raises(openai.BadRequestError) as caught:
        client.images.generate(model="gpt-image-2", prompt="no")
    assert isinstance(caught.value.body, dict) and caught.value.body["code"] == "moderation_blocked"
    assert fake.count("openai_generations") == 1


@pytest.mark.parametrize("kind", ["bad_json", "no_image", "bad_base64", "wrong_mime"])
def test_a_broken_upstream_answer_is_a_clear_error_not_a_crash(
    client: openai.OpenAI, fake: FakeUpstream, kind: str
) -> None:
    fake.add_fault("openai_generations", kind, times=3)
    with pytest.raises(openai.APIStatusError) as caught:
        client.images.generate(model="gpt-image-2", prompt="broken")
    assert caught.value.status_code == 502
    body = caught.value.body
    assert isinstance(body, dict) and body["type"] == "server_error"
    assert body["code"] in ("upstream_bad_response", "no_images_generated", "upstream_bad_image")
    assert fake.count("openai_generations") == 3


def test_a_hang_past_the_timeout_is_retried(client: openai.OpenAI, fake: FakeUpstream) -> None:
    fake.add_fault("openai_generations", "hang", delay_s=4, times=1)
    result = client.images.generate(model="gpt-image-2", prompt="slow then fast")
    assert len(result.data) == 1
    assert fake.count("openai_generations") == 2


def test_an_answer_trickling_past_the_timeout_is_cut_off_and_retried(client: openai.OpenAI,
                                                                    fake: FakeUpstream) -> None:
    # 100 pieces 0.5 s apart: each read well inside the 2 s upstream timeout, the answer 50 s long
    fake.add_fault("openai_generations", "trickle", delay_s=0.5, times=1)
    raw = client.images.with_raw_response.generate(model="gpt-image-2", prompt="trickled, then whole")
    result = raw.parse()
    assert len(result.data) == 1 and _image(result.data[0].b64_json).format == "PNG"
    assert fake.count("openai_generations") == 2  # the first attempt cut off at 2 s
    assert raw.headers["x-imagegate-images"] == "1/1"


def test_a_format_the_upstream_cannot_make_is_transcoded(client: openai.OpenAI, fake: FakeUpstream) -> None:
    raw = client.images.with_raw_response.generate(model="gemini-3-pro-image", prompt="webp please",
                                                   output_format="webp", output_compression=60)
    image = _image(raw.parse().data[0].b64_json)
    assert image.format == "WEBP"
    assert fake.calls[-1].json and "imageOutputOptions" not in json.dumps(fake.calls[-1].json)
    applied = json.loads(raw.headers["x-imagegate-applied"])
    assert applied["output_format"] == "webp"


def test_adjusted_parameters_are_visible(client: openai.OpenAI, fake: FakeUpstream) -> None:
    raw = client.images.with_raw_response.generate(model="gemini-3-pro-image", prompt="wide",
                                                   extra_body={"aspect_ratio": "7:4"})
    applied = json.loads(raw.headers["x-imagegate-applied"])
    assert applied["aspect_ratio"] == "16:9" and applied["adjusted"] == {"aspect_ratio": "7:4 -> 16:9"}
    assert fake.calls[-1].json and fake.calls[-1].json["generationConfig"]["imageConfig"]["aspectRatio"] == "16:9"


def test_a_result_changing_parameter_the_model_cannot_honour_is_a_400(
    client: openai.OpenAI, fake: FakeUpstream
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.images.generate(model="gemini-3-pro-image", prompt="x", background="transparent")
    assert isinstance(caught.value.body, dict) and caught.value.body["param"] == "background"
    assert fake.count() == 0


def test_models_list_offers_every_configured_family(client: openai.OpenAI) -> None:
    ids = {m.id for m in client.models.list().data}
    assert {"gemini-3-pro-image", "vertex/gemini-3-pro-image", "gpt-image-2", "gateway/gemini-3-pro-image",
            "imagen-4.0-generate-001", "demo-image"} <= ids


def test_upstream_keys_never_reach_rows_or_logs(gw: Stack, client: openai.OpenAI, fake: FakeUpstream) -> None:
    fake.add_fault("gemini", "status", status=400, times=1,
                   body={"error": {"code": 400, "message": f"bad key {fake.gemini_key}", "status": "INVALID_ARGUMENT"}})
    with pytest.raises(openai.APIStatusError):
        client.images.generate(model="gemini-2.5-flash-image", prompt="leak?")
    engine = gw.db()
    try:
        with engine.connect() as conn:
            dump = json.dumps([[list(map(str, row)) for row in conn.execute(sa.text(f"SELECT * FROM {t}"))]
                               for t in ("jobs", "job_images", "api_keys")])
    finally:
        engine.dispose()
    for secret in (fake.gemini_key, fake.openai_key, fake.chat_key):
        assert secret not in dump
        assert secret not in gw.logs()
    assert "[redacted]" in dump


def test_async_job_on_a_real_provider(gw: Stack, key: str, fake: FakeUpstream) -> None:
    response = httpx.post(f"{gw.base_url}/v1/jobs", headers={"Authorization": f"Bearer {key}"},
                          json={"model": "gemini-3.1-flash-image", "prompt": "batch", "n": 3, "image_size": "512"})
    job = poll(gw, key, response.json()["id"], until={"succeeded", "partial", "failed"})
    assert job["status"] == "succeeded" and job["applied"]["image_size"] == "512"
    assert all(i["width"] == 512 and i["usage"]["output_image_tokens"] > 0 for i in job["images"])
    assert fake.count("gemini") == 3
