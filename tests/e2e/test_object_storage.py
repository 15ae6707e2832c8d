"""Distributed mode with S3 storage and no shared disk: the API and two workers each have a data
dir of their own, images and input images live in a bucket of a real S3-protocol server, and every
way of getting an image back works (base64, the gateway's signed URLs, ``/v1/files`` with the key,
presigned object-store URLs)."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from pathlib import Path

import httpx
import openai
import pytest
from PIL import Image

from tests.conftest import S3Server
from tests.harness import Stack

pytestmark = pytest.mark.integration


def _files(directory: Path) -> list[Path]:
    return [p for p in directory.rglob("*") if p.is_file() and p.suffix in (".png", ".jpg", ".webp")]


@pytest.fixture(scope="module")
def bucket(s3_server: S3Server) -> str:
    return s3_server.bucket()


HOST_DIRS: list[Path] = []
"""The data dir of each process of the no-shared-disk stack."""


@pytest.fixture(scope="module")
def no_shared_disk(make_stack: Callable[..., Stack], s3_server: S3Server, bucket: str,
                   tmp_path_factory: pytest.TempPathFactory) -> Stack:
    stack = make_stack("distributed", start=False, **s3_server.settings(bucket, prefix="gw"))
    stack.cli("migrate")
    HOST_DIRS[:] = [tmp_path_factory.mktemp(host) for host in ("api-host", "worker-host-a", "worker-host-b")]
    stack.start_api(env={"IMAGEGATE_DATA_DIR": str(HOST_DIRS[0])})
    for directory in HOST_DIRS[1:]:
        stack.start_worker(env={"IMAGEGATE_DATA_DIR": str(directory)})
    return stack


def _objects(s3: S3Server, bucket: str, prefix: str) -> list[str]:
    listed = s3.client().list_objects_v2(Bucket=bucket, Prefix=prefix)
    return [o["Key"] for o in listed.get("Contents", [])]


def test_ten_images_on_two_workers_land_in_the_bucket(no_shared_disk: Stack, s3_server: S3Server,
                                                      bucket: str) -> None:
    stack = no_shared_disk
    key = stack.create_key("s3-ten")
    client = openai.OpenAI(base_url=stack.base_url + "/v1", api_key=key)
    response = client.images.with_raw_response.generate(model="demo", prompt="ten buckets", n=10,
                                                        size="96x64", response_format="url")
    result = response.parse()
    job_id = response.headers["x-imagegate-job-id"]
    assert len(result.data) == 10

    keys = _objects(s3_server, bucket, f"gw/{job_id[-2:]}/{job_id}/")
    assert len(keys) == 10
    # the gateway's signed URLs serve the bytes from the bucket, as does /v1/files with the key
    for item in result.data:
        assert item.url is not None and "/v1/files/" in item.url
        served = httpx.get(item.url)
        assert served.status_code == 200 and served.content.startswith(b"\x89PNG")
        file_id = item.url.split("/v1/files/")[1].split("?")[0]
        with_key = httpx.get(f"{stack.base_url}/v1/files/{file_id}", headers={"Authorization": f"Bearer {key}"})
        assert with_key.content == served.content
    # both workers made images, and no process wrote one to its own disk
    worker_logs = [w.output() for w in stack.workers]
    assert all("succeeded" in log for log in worker_logs)
    assert all(_files(directory) == [] for directory in HOST_DIRS), HOST_DIRS


def test_an_edit_reads_its_input_from_the_bucket(no_shared_disk: Stack, s3_server: S3Server, bucket: str) -> None:
    stack = no_shared_disk
    client = openai.OpenAI(base_url=stack.base_url + "/v1", api_key=stack.create_key("s3-edit"))
    buffer = io.BytesIO()
    Image.new("RGB", (80, 60), (250, 20, 20)).save(buffer, format="PNG")
    edited = client.images.edit(model="demo", image=("red.png", buffer.getvalue(), "image/png"),
                                prompt="paint it", size="96x64")
    assert edited.data[0].b64_json and base64.b64decode(edited.data[0].b64_json).startswith(b"\x89PNG")
    assert any(k.startswith("gw/inputs/") for k in _objects(s3_server, bucket, "gw/inputs/"))


def test_presigned_urls_bypass_the_gateway(make_stack: Callable[..., Stack], s3_server: S3Server) -> None:
    bucket = s3_server.bucket()
    stack = make_stack("distributed", IMAGEGATE_S3_PRESIGNED_URLS="true", **s3_server.settings(bucket))
    client = openai.OpenAI(base_url=stack.base_url + "/v1", api_key=stack.create_key("s3-presigned"))
    result = client.images.generate(model="demo", prompt="straight from the bucket", n=2, size="64x64",
                                    response_format="url")
    for item in result.data:
        assert item.url is not None and item.url.startswith(s3_server.endpoint + f"/{bucket}/")
        assert "X-Amz-Signature=" in item.url
        served = httpx.get(item.url)
        assert served.status_code == 200 and served.content.startswith(b"\x89PNG")
