"""imagegate's async API: submit, poll, list, cancel, and one key never seeing another's jobs."""

from __future__ import annotations

import base64
import io
import time
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.harness import Stack

pytestmark = pytest.mark.integration


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def poll(stack: Stack, key: str, job_id: str, *, until: set[str], timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job = httpx.get(f"{stack.base_url}/v1/jobs/{job_id}", headers=_auth(key)).json()
        if job["status"] in until or time.monotonic() > deadline:
            return job
        time.sleep(0.1)


def test_prefer_respond_async_then_poll_ten_images(stack: Stack) -> None:
    key = stack.create_key(f"async-{stack.mode}")
    response = httpx.post(
        f"{stack.base_url}/v1/images/generations",
        headers={**_auth(key), "Prefer": "respond-async"},
        json={"model": "demo", "prompt": "batch of ten", "n": 10, "size": "320x320"},
    )
    assert response.status_code == 202, response.text
    assert response.headers["preference-applied"] == "respond-async"
    submitted = response.json()
    assert submitted["object"] == "job" and submitted["status"] in ("queued", "running", "succeeded")
    assert response.headers["location"] == f"/v1/jobs/{submitted['id']}"
    assert submitted["progress"]["total"] == 10

    job = poll(stack, key, submitted["id"], until={"succeeded", "partial", "failed"})
    assert job["status"] == "succeeded"
    assert job["progress"] == {"total": 10, "done": 10, "succeeded": 10, "failed": 0, "canceled": 0}
    assert [i["index"] for i in job["images"]] == list(range(10))
    assert all(i["status"] == "succeeded" and i["error"] is None for i in job["images"])
    assert job["applied"]["width"] == 320 and job["applied"]["model"] == "demo-image"

    # the images are served at their URLs, and inline on request
    first = httpx.get(job["images"][0]["url"])
    assert Image.open(io.BytesIO(first.content)).size == (320, 320)
    inline = httpx.get(f"{stack.base_url}/jobs/{submitted['id']}", params={"include": "b64_json"},
                       headers=_auth(key)).json()
    assert base64.b64decode(inline["images"][3]["b64_json"]) == httpx.get(job["images"][3]["url"]).content


def test_post_jobs_and_list_with_pagination(stack: Stack) -> None:
    key = stack.create_key(f"list-{stack.mode}")
    ids = []
    for i in range(3):
        response = httpx.post(f"{stack.base_url}/v1/jobs", headers=_auth(key),
                              json={"prompt": f"job {i}", "n": 1, "size": "128x128"})
        assert response.status_code == 202, response.text
        ids.append(response.json()["id"])
    for job_id in ids:
        assert poll(stack, key, job_id, until={"succeeded"})["status"] == "succeeded"

    page1 = httpx.get(f"{stack.base_url}/v1/jobs", params={"limit": 2}, headers=_auth(key)).json()
    assert [j["id"] for j in page1["data"]] == [ids[2], ids[1]] and page1["has_more"] is True
    page2 = httpx.get(f"{stack.base_url}/v1/jobs", params={"limit": 2, "after": page1["last_id"]},
                      headers=_auth(key)).json()
    assert [j["id"] for j in page2["data"]] == [ids[0]] and page2["has_more"] is False


def test_a_key_sees_only_its_own_jobs_and_files(stack: Stack) -> None:
    owner = stack.create_key(f"owner-{stack.mode}")
    other = stack.create_key(f"other-{stack.mode}")
    job_id = httpx.post(f"{stack.base_url}/v1/jobs", headers=_auth(owner),
                        json={"prompt": "mine", "size": "128x128"}).json()["id"]
    job = poll(stack, owner, job_id, until={"succeeded"})
    file_id = job["images"][0]["id"]

    for path in (f"/v1/jobs/{job_id}", f"/jobs/{job_id}", f"/v1/files/{file_id}"):
        response = httpx.get(stack.base_url + path, headers=_auth(other))
        assert response.status_code == 404, path
        assert response.json()["error"]["type"] == "invalid_request_error"
    assert httpx.delete(f"{stack.base_url}/v1/jobs/{job_id}", headers=_auth(other)).status_code == 404
    listed = httpx.get(f"{stack.base_url}/v1/jobs", headers=_auth(other)).json()
    assert job_id not in [j["id"] for j in listed["data"]]
    # and the owner still can
    assert httpx.get(f"{stack.base_url}/v1/files/{file_id}", headers=_auth(owner)).status_code == 200


def test_usage_report_of_the_calling_key(stack: Stack) -> None:
    key = stack.create_key(f"usage-{stack.mode}")
    for n in (2, 1):
        response = httpx.post(f"{stack.base_url}/v1/images/generations", headers=_auth(key), timeout=60,
                              json={"model": "demo", "prompt": "count me", "n": n, "size": "64x64"})
        assert response.status_code == 200 and response.headers["x-imagegate-cost"] == "0.000000"
    report = httpx.get(f"{stack.base_url}/v1/usage", headers=_auth(key)).json()
    assert report["totals"]["images_succeeded"] == 3 and report["totals"]["billed_usd"] == "0.000000"
    assert [(r["model"], r["images_succeeded"]) for r in report["data"]] == [("demo-image", 3)]
    grouped = httpx.get(f"{stack.base_url}/v1/usage", headers=_auth(key),
                        params={"group_by": "model,size,quality", "format": "csv"})
    assert grouped.status_code == 200 and grouped.text.splitlines()[1].startswith("demo-image,64x64,auto,3,0,")


def test_unknown_job_is_404(stack: Stack) -> None:
    key = stack.create_key(f"unknown-{stack.mode}")
    response = httpx.get(f"{stack.base_url}/v1/jobs/job_doesnotexist", headers=_auth(key))
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "job_not_found"
