"""Retention, end to end: with short TTLs, generated images, input images and job rows are gone
after the clean-up runs (Celery beat on a worker in distributed mode with S3 storage and no shared
disk; the API's own scheduler in embedded mode), an expired job or file answers 410 Gone saying it
expired, and the ledger and usage reports are exactly what they were."""

from __future__ import annotations

import io
import os
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import openai
import pytest
from PIL import Image

from core.config import Settings
from core.db import create_sync_engine, sync_sessionmaker
from core.models.types import utcnow
from core.retention import TOMBSTONE_S, run_retention
from core.storage import open_store
from tests.conftest import S3Server
from tests.harness import ADMIN_KEY, Stack, priced_demo

pytestmark = pytest.mark.integration


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 64), tuple(os.urandom(3))).save(out, format="PNG")  # bytes of its own
    return out.getvalue()


def _gone(stack: Stack, key: str, job_id: str, timeout: float = 60) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        response = httpx.get(f"{stack.base_url}/v1/jobs/{job_id}", headers=_auth(key))
        if response.status_code != 200 or time.monotonic() > deadline:
            return response
        time.sleep(0.25)


def _usage(stack: Stack, key_name: str) -> dict[str, Any]:
    response = httpx.get(f"{stack.base_url}/admin/usage", params={"key": key_name, "group_by": "key,model,day"},
                         headers=_auth(ADMIN_KEY))
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


def _unlinked(rows: list[dict[str, Any]], *columns: str) -> list[dict[str, Any]]:
    return [{**row, **dict.fromkeys(columns)} for row in rows]


def _objects(s3: S3Server, bucket: str, prefix: str) -> list[str]:
    listed = s3.client().list_objects_v2(Bucket=bucket, Prefix=prefix)
    return [o["Key"] for o in listed.get("Contents", [])]


@pytest.fixture(scope="module")
def short_lived(make_stack: Callable[..., Stack], s3_server: S3Server,
                tmp_path_factory: pytest.TempPathFactory) -> tuple[Stack, str]:
    """Distributed, S3, API and worker on data dirs of their own; results and inputs kept 3 s,
    the clean-up every second, sent by Celery beat on the worker."""
    bucket = s3_server.bucket()
    stack = make_stack("distributed", start=False, **s3_server.settings(bucket, prefix="gw"),
                       **priced_demo(tmp_path_factory.mktemp("prices")),
                       IMAGEGATE_RESULT_TTL_S="3", IMAGEGATE_INPUT_TTL_S="3", IMAGEGATE_RETENTION_INTERVAL_S="1",
                       IMAGEGATE_URL_SIGNING_KEY="retention-test-signing-key")
    stack.cli("migrate")
    stack.start_api(env={"IMAGEGATE_DATA_DIR": str(tmp_path_factory.mktemp("api-host"))})
    stack.start_worker(env={"IMAGEGATE_DATA_DIR": str(tmp_path_factory.mktemp("worker-host"))}, beat=True)
    return stack, bucket


def test_expired_jobs_images_and_inputs_are_deleted_and_the_ledger_stays(
        short_lived: tuple[Stack, str], s3_server: S3Server) -> None:
    stack, bucket = short_lived
    key = stack.create_key("retention")
    client = openai.OpenAI(base_url=stack.base_url + "/v1", api_key=key)
    generated = client.images.with_raw_response.generate(model="demo", prompt="fleeting", n=2, size="64x64",
                                                         response_format="url")
    edited = client.images.with_raw_response.edit(model="demo", image=("in.png", _png(), "image/png"),
                                                  prompt="fleeting edit", size="64x64", response_format="url")
    jobs = [generated.headers["x-imagegate-job-id"], edited.headers["x-imagegate-job-id"]]
    urls = [d.url for d in generated.parse().data]
    assert all(url and httpx.get(url).status_code == 200 for url in urls)
    usage, money = _usage(stack, "retention"), stack.money("retention")
    ledger = stack.rows("SELECT * FROM ledger_entries ORDER BY id")
    assert money.charges == 3 and len(ledger) > 0
    assert _objects(s3_server, bucket, "gw/inputs/") != []
    assert all(_objects(s3_server, bucket, f"gw/{j[-2:]}/{j}/") != [] for j in jobs)

    for job_id in jobs:  # the worker's beat sends the clean-up; the jobs expire 3 s after they ended
        response = _gone(stack, key, job_id)
        assert response.status_code == 410, response.text
        error = response.json()["error"]
        assert error["code"] == "job_expired" and "expired" in error["message"] and job_id in error["message"]

    # the objects are gone from the bucket, inputs too; the image rows are gone, the job rows are
    # tombstones that hold no request any more
    assert all(_objects(s3_server, bucket, f"gw/{j[-2:]}/{j}/") == [] for j in jobs)
    deadline = time.monotonic() + 30
    while _objects(s3_server, bucket, "gw/inputs/") and time.monotonic() < deadline:
        time.sleep(0.25)
    assert _objects(s3_server, bucket, "gw/inputs/") == []
    assert stack.rows("SELECT count(*) AS n FROM input_objects")[0]["n"] == 0
    for job_id in jobs:
        assert stack.images(job_id) == {}
        [row] = stack.rows("SELECT request, expired_at FROM jobs WHERE id = :j", j=job_id)
        assert row["expired_at"] is not None and row["request"] in ({}, "{}")
    # a signed URL handed out before answers 410 saying so; by id with the key, 404
    signed = httpx.get(urls[0])
    assert signed.status_code == 410 and signed.json()["error"]["code"] == "file_expired"
    assert "expired" in signed.json()["error"]["message"]
    file_id = urls[0].split("/v1/files/")[1].split("?")[0]
    assert httpx.get(f"{stack.base_url}/v1/files/{file_id}", headers=_auth(key)).status_code == 404
    listed = httpx.get(f"{stack.base_url}/v1/jobs", headers=_auth(key)).json()
    assert [j["id"] for j in listed["data"] if j["id"] in jobs] == []
    # the ledger keeps every row, amount and record (the database set the reference to the
    # deleted image rows to NULL), and so the reports and the key's money stay exact
    assert _unlinked(stack.rows("SELECT * FROM ledger_entries ORDER BY id"), "job_image_id") == \
        _unlinked(ledger, "job_image_id")
    assert _usage(stack, "retention") == usage and stack.money("retention") == money

    # much later the tombstones go too (the same clean-up, run as if a month had passed): the
    # ledger keeps every row (their job reference set to NULL), the reports stay exact
    settings = Settings(_env_file=None, database_url=stack.database_url,  # type: ignore[call-arg]
                        storage_url=stack.env["IMAGEGATE_STORAGE_URL"],
                        s3_endpoint_url=stack.env["IMAGEGATE_S3_ENDPOINT_URL"],
                        s3_access_key_id=stack.env["IMAGEGATE_S3_ACCESS_KEY_ID"],
                        s3_secret_access_key=stack.env["IMAGEGATE_S3_SECRET_ACCESS_KEY"], result_ttl_s=3)
    engine = create_sync_engine(settings.resolved_database_url, pool_size=1, max_overflow=0)
    try:
        report = run_retention(sync_sessionmaker(engine), open_store(settings), settings,
                               now=utcnow() + timedelta(seconds=TOMBSTONE_S + 60))
    finally:
        engine.dispose()
    assert report.tombstones_deleted >= 2
    assert stack.rows("SELECT id FROM jobs WHERE id IN (:a, :b)", a=jobs[0], b=jobs[1]) == []
    after = stack.rows("SELECT * FROM ledger_entries ORDER BY id")
    assert _unlinked(after, "job_image_id", "job_id") == _unlinked(ledger, "job_image_id", "job_id")
    assert {r["job_id"] for r in after} == {None}
    assert _usage(stack, "retention") == usage and stack.money("retention") == money
    assert httpx.get(f"{stack.base_url}/v1/jobs/{jobs[0]}", headers=_auth(key)).status_code == 404


def test_a_job_asks_for_a_shorter_retention_in_embedded_mode(make_stack: Callable[..., Stack]) -> None:
    """No gateway-wide TTL; the API's own scheduler runs the clean-up every second."""
    stack = make_stack("embedded", IMAGEGATE_RETENTION_INTERVAL_S="1")
    key = stack.create_key("short-job")
    body = {"model": "demo", "prompt": "brief", "size": "64x64"}
    short = httpx.post(f"{stack.base_url}/v1/jobs", headers=_auth(key), json={**body, "result_ttl_s": 1}).json()
    kept = httpx.post(f"{stack.base_url}/v1/jobs", headers=_auth(key), json=body).json()
    assert short["status"] != "failed"

    response = _gone(stack, key, short["id"])
    assert response.status_code == 410, response.text
    assert stack.stored_files(short["id"]) == []
    assert stack.images(short["id"]) == {}
    # the other job is kept, with its file
    job = httpx.get(f"{stack.base_url}/v1/jobs/{kept['id']}", headers=_auth(key)).json()
    assert job["status"] == "succeeded" and job["expires_at"] is None
    assert stack.stored_files(kept["id"]) != []
    assert httpx.get(job["images"][0]["url"]).status_code == 200


@pytest.mark.parametrize("ttl", [0, -5, "soon"])
def test_a_bad_result_ttl_is_a_400_naming_it(embedded: Stack, ttl: object) -> None:
    key = embedded.create_key(f"bad-ttl-{ttl}")
    before = embedded.count_rows()
    response = httpx.post(f"{embedded.base_url}/v1/jobs", headers=_auth(key),
                          json={"prompt": "x", "result_ttl_s": ttl})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "result_ttl_s"
    assert embedded.count_rows() == before
