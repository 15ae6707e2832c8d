"""Generations and jobs through HTTP, on the embedded app in this process: synchronous answers,
``Prefer: respond-async`` and polling, ``/v1/jobs`` (submit, list, page, cancel), idempotent
replays and the headers every synchronous answer carries."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from PIL import Image

from tests.inproc.gateway import Gateway, running_gateway

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
async def gw(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Gateway]:
    async with running_gateway(tmp_path_factory.mktemp("generations")) as gateway:
        yield gateway


def decoded(b64: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(b64)))
    image.load()
    return image


# -- synchronous --------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "size", "expected"), [
    (1, None, (1024, 1024)),
    (1, "64x64", (64, 64)),
    (3, "320x192", (320, 192)),
    (1, "1536x1024", (1536, 1024)),
])
async def test_a_synchronous_generation_answers_n_images_of_the_size(
    gw: Gateway, n: int, size: str | None, expected: tuple[int, int]
) -> None:
    key = await gw.create_key()
    body: dict[str, Any] = {"model": "demo", "prompt": "a lighthouse at dusk", "n": n}
    if size:
        body["size"] = size
    response = await gw.generate(key, body)
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert len(data) == n
    assert all((decoded(d["b64_json"]).format, decoded(d["b64_json"]).size) == ("PNG", expected) for d in data)

    job_id = response.headers["x-imagegate-job-id"]
    assert job_id.startswith("job_")
    assert response.headers["x-imagegate-cost"] == "0.000000"
    assert response.headers["x-imagegate-served-by"] == "demo-image"
    assert response.headers["x-imagegate-images"] == f"{n}/{n}"
    applied = json.loads(response.headers["x-imagegate-applied"])
    assert applied["model"] == "demo-image" and applied["size"] == f"{expected[0]}x{expected[1]}"
    [job] = gw.rows("SELECT status, n, succeeded FROM jobs WHERE id = :j", j=job_id)
    assert job == {"status": "succeeded", "n": n, "succeeded": n}


async def test_an_aspect_ratio_and_an_output_format_are_applied(gw: Gateway) -> None:
    key = await gw.create_key()
    response = await gw.generate(key, {"model": "demo", "prompt": "wide", "aspect_ratio": "16:9",
                                       "quality": "low", "output_format": "webp"})
    assert response.status_code == 200, response.text
    image = decoded(response.json()["data"][0]["b64_json"])
    assert image.format == "WEBP" and image.width > image.height
    assert abs(image.width / image.height - 16 / 9) < 0.01
    applied = json.loads(response.headers["x-imagegate-applied"])
    assert (applied["aspect_ratio"], applied["output_format"]) == ("16:9", "webp")


async def test_response_format_url_answers_a_signed_url_to_the_stored_image(gw: Gateway) -> None:
    key = await gw.create_key()
    response = await gw.generate(key, {"model": "demo", "prompt": "by url", "size": "96x96",
                                       "response_format": "url"})
    assert response.status_code == 200, response.text
    [item] = response.json()["data"]
    assert item.get("b64_json") is None and "/v1/files/img_" in item["url"]
    path = item["url"].split("://", 1)[1].split("/", 1)[1]
    stored = await gw.http.get("/" + path)  # no key: the signature opens it
    assert stored.status_code == 200 and stored.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(stored.content)).size == (96, 96)


# -- asynchronous -------------------------------------------------------------------------------


async def test_prefer_respond_async_answers_202_then_the_job_is_polled_to_its_end(gw: Gateway) -> None:
    key = await gw.create_key()
    response = await gw.generate(key, {"model": "demo", "prompt": "later", "n": 4, "size": "128x128"},
                                 Prefer="respond-async")
    assert response.status_code == 202, response.text
    submitted = response.json()
    assert submitted["object"] == "job" and submitted["progress"]["total"] == 4
    assert response.headers["location"] == f"/v1/jobs/{submitted['id']}"
    assert response.headers["preference-applied"] == "respond-async"
    assert response.headers["x-imagegate-job-id"] == submitted["id"]

    job = await gw.poll(key, submitted["id"])
    assert job["status"] == "succeeded" and job["dialect"] == "openai_images"
    assert job["progress"] == {"total": 4, "done": 4, "succeeded": 4, "failed": 0, "canceled": 0}
    assert [i["index"] for i in job["images"]] == [0, 1, 2, 3]
    assert all(i["status"] == "succeeded" and (i["width"], i["height"]) == (128, 128) for i in job["images"])
    inline = (await gw.http.get(f"/jobs/{submitted['id']}", params={"include": "b64_json"},
                                headers=key.auth)).json()
    assert decoded(inline["images"][2]["b64_json"]).size == (128, 128)


async def test_post_jobs_answers_202_with_the_job_and_its_headers(gw: Gateway) -> None:
    key = await gw.create_key()
    response = await gw.http.post("/v1/jobs", headers=key.auth, json={"prompt": "a job", "n": 2, "size": "64x64"})
    assert response.status_code == 202, response.text
    job = response.json()
    assert response.headers["x-imagegate-job-id"] == job["id"] == response.headers["location"].rsplit("/", 1)[1]
    assert response.headers["x-imagegate-cost"] == "0.000000"
    assert job["dialect"] == "jobs" and job["model"] == "demo-image"
    done = await gw.poll(key, job["id"])
    assert done["status"] == "succeeded" and done["cost_usd"] == "0.000000"


async def test_list_jobs_newest_first_in_pages_and_by_status(gw: Gateway) -> None:
    key = await gw.create_key()
    ids = []
    for i in range(3):
        response = await gw.http.post("/v1/jobs", headers=key.auth, json={"prompt": f"job {i}", "size": "64x64"})
        ids.append(response.json()["id"])
    for job_id in ids:
        await gw.poll(key, job_id)

    first = (await gw.http.get("/v1/jobs", params={"limit": 2}, headers=key.auth)).json()
    assert [j["id"] for j in first["data"]] == [ids[2], ids[1]] and first["has_more"] is True
    assert (first["first_id"], first["last_id"]) == (ids[2], ids[1])
    second = (await gw.http.get("/v1/jobs", params={"limit": 2, "after": first["last_id"]},
                                headers=key.auth)).json()
    assert [j["id"] for j in second["data"]] == [ids[0]] and second["has_more"] is False
    succeeded = (await gw.http.get("/v1/jobs", params={"status": "succeeded"}, headers=key.auth)).json()
    assert [j["id"] for j in succeeded["data"]] == ids[::-1]
    assert (await gw.http.get("/v1/jobs", params={"status": "failed"}, headers=key.auth)).json()["data"] == []
    assert (await gw.http.get("/v1/jobs", params={"limit": 0}, headers=key.auth)).status_code == 400


async def test_cancelling_a_finished_job_changes_nothing(gw: Gateway) -> None:
    key = await gw.create_key()
    job_id = (await gw.generate(key, {"model": "demo", "prompt": "done", "size": "64x64"})).headers[
        "x-imagegate-job-id"]
    response = await gw.http.delete(f"/v1/jobs/{job_id}", headers=key.auth)
    assert response.status_code == 200
    assert response.json()["status"] == "succeeded" and response.json()["progress"]["canceled"] == 0


async def test_a_key_sees_only_its_own_jobs_and_files(gw: Gateway) -> None:
    owner, other = await gw.create_key(), await gw.create_key()
    response = await gw.generate(owner, {"model": "demo", "prompt": "mine", "size": "64x64"})
    job_id = response.headers["x-imagegate-job-id"]
    image_id = (await gw.poll(owner, job_id))["images"][0]["id"]
    for path in (f"/v1/jobs/{job_id}", f"/jobs/{job_id}", f"/v1/files/{image_id}"):
        refused = await gw.http.get(path, headers=other.auth)
        assert refused.status_code == 404, path
        assert refused.json()["error"]["code"] in ("job_not_found", "file_not_found")
    assert (await gw.http.delete(f"/v1/jobs/{job_id}", headers=other.auth)).status_code == 404
    assert (await gw.http.get("/v1/jobs", headers=other.auth)).json()["data"] == []
    assert (await gw.http.get(f"/v1/files/{image_id}", headers=owner.auth)).status_code == 200


# -- idempotency --------------------------------------------------------------------------------


async def test_an_idempotency_key_replays_the_same_job_and_refuses_another_body(gw: Gateway) -> None:
    key = await gw.create_key()
    body = {"model": "demo", "prompt": "only once", "n": 2, "size": "64x64"}
    first = await gw.generate(key, body, **{"Idempotency-Key": "order-42"})
    before = gw.count_rows()
    second = await gw.generate(key, body, **{"Idempotency-Key": "order-42"})
    assert first.status_code == second.status_code == 200
    assert first.headers["x-imagegate-job-id"] == second.headers["x-imagegate-job-id"]
    assert first.json()["data"] == second.json()["data"]
    assert gw.count_rows() == before  # no second job, no second image

    conflict = await gw.generate(key, {**body, "prompt": "something else"}, **{"Idempotency-Key": "order-42"})
    assert conflict.status_code == 409
    assert conflict.json()["error"]["code"] == "idempotency_key_reused"
    assert conflict.json()["error"]["param"] == "Idempotency-Key"
    assert gw.count_rows() == before

    # the same Idempotency-Key is another request for another key
    stranger = await gw.create_key()
    other = await gw.generate(stranger, body, **{"Idempotency-Key": "order-42"})
    assert other.status_code == 200 and other.headers["x-imagegate-job-id"] != first.headers["x-imagegate-job-id"]


async def test_an_idempotent_async_submit_replays_the_job(gw: Gateway) -> None:
    key = await gw.create_key()
    body = {"prompt": "queued once", "size": "64x64"}
    first = await gw.http.post("/v1/jobs", headers={**key.auth, "Idempotency-Key": "batch-7"}, json=body)
    again = await gw.http.post("/v1/jobs", headers={**key.auth, "Idempotency-Key": "batch-7"}, json=body)
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"]
    assert len(gw.rows("SELECT id FROM jobs WHERE api_key_id = :k", k=key.id)) == 1
