"""Hostile input against real stacks: text PostgreSQL cannot store, images whose pixels would
take gigabytes, and secrets in URLs that must stay out of the logs."""

from __future__ import annotations

import re
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.harness import ADMIN_KEY, Stack
from tests.pngs import blank_png

pytestmark = pytest.mark.integration

NUL_REQUESTS = [
    ("POST", "/v1/images/generations", {"json": {"prompt": "a\u0000b"}}, "prompt"),
    ("POST", "/v1/jobs", {"json": {"prompt": "a\u0000b"}}, "prompt"),
    ("POST", "/v1/chat/completions", {"json": {"messages": [{"role": "user", "content": "a\u0000b"}]}},
     "messages[0].content"),
    ("POST", "/v1/images/generations", {"json": {"prompt": "x", "model": "demo\u0000"}}, "model"),
    ("GET", "/v1/jobs/job_%00", {}, None),
    ("GET", "/v1/jobs?status=%00", {}, "status"),
    ("GET", "/v1/jobs?after=job_%00", {}, "after"),
    ("GET", "/v1/files/img_%00", {}, None),
]


@pytest.mark.parametrize(("method", "path", "kwargs", "param"), NUL_REQUESTS,
                         ids=[f"{m} {p} {param}" for m, p, _, param in NUL_REQUESTS])
def test_nul_is_a_400_on_postgresql_and_stores_nothing(distributed: Stack, method: str, path: str,
                                                       kwargs: dict[str, object], param: str | None) -> None:
    key = distributed.create_key(f"nul-{abs(hash((method, path, param)))}")
    before = distributed.count_rows()
    response = httpx.request(method, distributed.base_url + path, headers={"Authorization": f"Bearer {key}"},
                             timeout=60, **kwargs)  # type: ignore[arg-type]
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param
    assert distributed.count_rows() == before


def test_nul_in_an_admin_key_name_or_lookup_is_a_400_on_postgresql(distributed: Stack) -> None:
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    created = httpx.post(f"{distributed.base_url}/admin/keys", json={"name": "bad\u0000name"}, headers=admin)
    assert created.status_code == 400 and created.json()["error"]["param"] == "name"
    looked_up = httpx.get(f"{distributed.base_url}/admin/keys/bad%00name", headers=admin)
    assert looked_up.status_code == 400
    assert httpx.get(f"{distributed.base_url}/admin/usage", params={"key": "a\x00"}, headers=admin).status_code == 400


# -- a small file that claims a huge canvas


def _peak_rss_kib(pid: int) -> int:
    """The process's peak resident set (VmHWM), in KiB."""
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
    assert match is not None
    return int(match.group(1))


def test_an_image_past_the_pixel_limit_is_refused_without_decoding_it(stack: Stack) -> None:
    bomb = blank_png(12000, 12000)  # 144 megapixels: 576 MB as RGBA, about 17 KB as a file
    assert len(bomb) < 20_000
    key = stack.create_key(f"bomb-{stack.mode}")
    processes = [p.popen.pid for p in ([stack.api] if stack.api else []) + stack.workers]
    before = {pid: _peak_rss_kib(pid) for pid in processes}
    rows = stack.count_rows()
    for _ in range(3):
        response = httpx.post(f"{stack.base_url}/v1/images/edits", headers={"Authorization": f"Bearer {key}"},
                              data={"model": "demo", "prompt": "decode me", "size": "64x64"},
                              files={"image": ("bomb.png", bomb, "image/png")}, timeout=120)
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["param"] == "image" and error["code"] == "image_too_large"
        assert "12000x12000" in error["message"]
    time.sleep(0.5)  # a worker that had been sent the image would be decoding it by now
    grown_mib = {pid: (_peak_rss_kib(pid) - before[pid]) / 1024 for pid in processes}
    assert all(grown < 40 for grown in grown_mib.values()), grown_mib
    assert stack.count_rows() == rows


# -- secrets in query strings


def test_key_and_signature_query_strings_stay_out_of_every_log(stack: Stack) -> None:
    key = stack.create_key(f"logs-{stack.mode}")
    assert httpx.get(f"{stack.base_url}/v1/models", params={"key": key}).status_code == 200
    made = httpx.post(f"{stack.base_url}/v1/images/generations", headers={"Authorization": f"Bearer {key}"},
                      json={"model": "demo", "prompt": "a signed url", "size": "64x64", "response_format": "url"},
                      timeout=60)
    assert made.status_code == 200, made.text
    url = made.json()["data"][0]["url"]
    signature = parse_qs(urlsplit(url).query)["signature"][0]
    assert httpx.get(url).status_code == 200  # no credentials: the signature opens it
    time.sleep(0.5)  # access log lines are written after the response

    logs = {path: path.read_text(errors="replace") for path in stack.tmp.rglob("*.log")}
    assert any("/v1/models" in text for text in logs.values()), "the access log is on, and written"
    assert any(urlsplit(url).path in text for text in logs.values())
    for path, text in logs.items():
        assert key not in text, f"the API key is in {path.name}"
        assert signature not in text, f"a file URL's signature is in {path.name}"
