"""The CLI against a running gateway: ``imagegate generate``, ``batch`` and ``jobs``, run as the
installed entry point in a subprocess, as a person or a pipeline runs them; their files, their
``--json`` output, their exit codes, and a batch killed mid-way and resumed without paying twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.e2e.test_jobs import poll
from tests.fakes.upstream import FakeUpstream
from tests.harness import BIN, Stack, free_port

pytestmark = pytest.mark.integration

DEMO_MICROS = 40_000  # tests.harness.DEMO_USD


def cli_env(stack: Stack | None, key: str | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEGATE_")}
    if stack is not None:
        env["IMAGEGATE_URL"] = stack.base_url
    if key is not None:
        env["IMAGEGATE_API_KEY"] = key
    env["COLUMNS"] = "160"
    return {**env, **extra}


def run(
    stack: Stack | None, key: str | None, *args: str, cwd: Path, timeout: float = 120, **extra: str
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(BIN / "imagegate"), *args],
        env=cli_env(stack, key, **extra),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if key is not None:
        assert key not in done.stdout and key not in done.stderr, "the CLI printed the API key"
    return done


def jobs_of(stack: Stack, key_name: str) -> list[dict[str, Any]]:
    return stack.rows(
        "SELECT j.id, j.status, j.idempotency_key FROM jobs j JOIN api_keys k ON k.id = j.api_key_id "
        "WHERE k.name = :name",
        name=key_name,
    )


def test_generate_writes_the_images_and_prints_the_cost(slow: Stack, tmp_path: Path) -> None:
    name = f"cli-generate-{slow.mode}"
    key = slow.create_key(name)
    done = run(
        slow,
        key,
        "generate",
        "a lighthouse at dusk",
        "-n",
        "3",
        "--size",
        "96x96",
        "--out",
        str(tmp_path / "out"),
        "--json",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["status"] == "succeeded" and result["cost_usd"] == "0.120000"
    assert result["job_id"].startswith("job_")
    assert len(result["paths"]) == 3 and [i["status"] for i in result["images"]] == ["succeeded"] * 3
    for path in result["paths"]:
        assert Path(path).parent == tmp_path / "out"
        with Image.open(path) as image:
            assert (image.format, image.size) == ("PNG", (96, 96))
    # each image's progress was shown on stderr, the job followed by its event stream, not polled
    assert "image 3" in done.stderr and "succeeded" in done.stderr
    log = slow.api.output() if slow.api else ""
    assert f"/v1/jobs/{result['job_id']}/events" in log
    assert f'"GET /v1/jobs/{result["job_id"]} HTTP' not in log
    assert slow.money(name).charged == 3 * DEMO_MICROS


def test_generate_for_a_person_prints_paths_and_cost(slow_embedded: Stack, tmp_path: Path) -> None:
    key = slow_embedded.create_key("cli-person")
    done = run(
        slow_embedded,
        None,
        "generate",
        "two boats",
        "-n",
        "2",
        "--size",
        "64x64",
        "--out",
        "pics",
        "--api-key",
        key,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    paths = done.stdout.split()
    assert len(paths) == 2 and all((tmp_path / p).is_file() for p in paths)
    assert "cost $0.080000" in done.stderr and key not in done.stderr + done.stdout


def test_jobs_list_show_and_cancel(make_stack: Callable[..., Stack], tmp_path: Path) -> None:
    stack = make_stack("distributed", start=False).start(workers=0)  # no worker: the job waits in the queue
    key = stack.create_key("cli-jobs")
    auth = {"Authorization": f"Bearer {key}"}
    job_id = httpx.post(
        f"{stack.base_url}/v1/jobs", headers=auth, json={"prompt": "many", "n": 10, "size": "64x64"}
    ).json()["id"]

    listed = run(stack, key, "jobs", "list", "--json", cwd=tmp_path)
    assert listed.returncode == 0 and job_id in [j["id"] for j in json.loads(listed.stdout)["data"]]
    assert job_id in run(stack, key, "jobs", "list", cwd=tmp_path).stdout

    canceled = run(stack, key, "jobs", "cancel", job_id, "--json", cwd=tmp_path)
    assert canceled.returncode == 0, canceled.stderr
    assert json.loads(canceled.stdout)["job_id"] == job_id
    job = poll(stack, key, job_id, until={"canceled"})
    assert job["status"] == "canceled" and job["progress"]["canceled"] == 10

    shown = run(stack, key, "jobs", "show", job_id, "--json", cwd=tmp_path)
    assert shown.returncode == 0
    view = json.loads(shown.stdout)
    assert view["job_id"] == job_id and view["status"] == job["status"] and "cost_usd" in view
    assert job_id in run(stack, key, "jobs", "show", job_id, cwd=tmp_path).stdout

    missing = run(stack, key, "jobs", "show", "job_nosuchjob", cwd=tmp_path)
    assert missing.returncode == 2 and "No job found" in missing.stderr


def test_exit_codes_of_usage_errors_and_an_unreachable_gateway(slow_embedded: Stack, tmp_path: Path) -> None:
    stack = slow_embedded
    key = stack.create_key("cli-exits")
    no_key = run(stack, None, "generate", "x", cwd=tmp_path)
    assert no_key.returncode == 2 and "IMAGEGATE_API_KEY" in no_key.stderr
    bad_option = run(stack, key, "generate", "x", "-n", "11", cwd=tmp_path)
    assert bad_option.returncode == 2
    refused = run(stack, key, "generate", "x", "--size", "7x7000000", cwd=tmp_path)
    assert refused.returncode == 2 and "size" in refused.stderr
    said = json.loads(run(stack, key, "generate", "x", "--size", "7x7000000", "--json", cwd=tmp_path).stdout)
    assert said["exit_code"] == 2 and said["error"]["status"] == 400 and "size" in said["error"]["message"]
    wrong_key = run(stack, "sk-not-a-key", "jobs", "list", cwd=tmp_path)
    assert wrong_key.returncode == 2
    gone = run(None, key, "generate", "x", cwd=tmp_path, IMAGEGATE_URL=f"http://127.0.0.1:{free_port()}")
    assert gone.returncode == 4 and "cannot reach" in gone.stderr
    # nothing was made
    assert jobs_of(stack, "cli-exits") == []


def test_partial_and_failed_jobs_have_their_exit_codes(
    gw: Stack, key: str, upstream: FakeUpstream, tmp_path: Path
) -> None:
    upstream.add_fault("gemini", "safety_prompt", times=1, prompt_contains="half")
    partial = run(
        gw,
        key,
        "generate",
        "half forbidden",
        "-n",
        "2",
        "--model",
        "gemini-3-pro-image",
        "--json",
        "--out",
        "p",
        cwd=tmp_path,
    )
    assert partial.returncode == 1, partial.stderr
    result = json.loads(partial.stdout)
    assert result["status"] == "partial" and len(result["paths"]) == 1
    assert [i["error"]["code"] for i in result["images"] if i["error"]] == ["moderation_blocked"]

    upstream.add_fault("gemini", "safety_prompt", times=2, prompt_contains="all")
    failed = run(
        gw,
        key,
        "generate",
        "all forbidden",
        "-n",
        "2",
        "--model",
        "gemini-3-pro-image",
        "--json",
        "--out",
        "f",
        cwd=tmp_path,
    )
    assert failed.returncode == 3 and json.loads(failed.stdout)["status"] == "failed"
    assert not (tmp_path / "f").exists() or list((tmp_path / "f").iterdir()) == []


# -- batch


def write_batch(path: Path, count: int) -> list[dict[str, Any]]:
    lines = [
        {"id": f"line-{i}", "prompt": f"lighthouse number {i}", "size": "64x64", "n": 2 if i == 0 else 1}
        for i in range(count)
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return lines


def results_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_a_batch_killed_mid_way_resumes_without_paying_twice(slow: Stack, tmp_path: Path) -> None:
    name = f"cli-batch-{slow.mode}"
    key = slow.create_key(name)
    lines = write_batch(tmp_path / "prompts.jsonl", 8)
    images = sum(line["n"] for line in lines)
    out, results = tmp_path / "out", tmp_path / "out" / "results.jsonl"
    argv = [str(BIN / "imagegate"), "batch", "prompts.jsonl", "--out", "out", "--concurrency", "2"]

    first = subprocess.Popen(
        argv, env=cli_env(slow, key), cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 60
        while len(results_of(results)) < 2 and time.monotonic() < deadline and first.poll() is None:
            time.sleep(0.05)
        assert first.poll() is None, "the batch ended before it could be interrupted"
        first.send_signal(signal.SIGKILL)  # no chance to clean up
    finally:
        first.wait(10)
    written = results_of(results)
    assert 2 <= len(written) < len(lines)
    submitted = len(jobs_of(slow, name))
    assert submitted > len(written)  # lines were in flight when it was killed

    resumed = run(slow, key, "batch", "prompts.jsonl", "--out", "out", "--concurrency", "2", "--json", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout)
    assert summary["skipped"] == len(written) and summary["statuses"] == {"succeeded": len(lines)}

    records = results_of(results)
    assert sorted(r["id"] for r in records) == sorted(line["id"] for line in lines)
    assert all(r["status"] == "succeeded" and r["job_id"] for r in records)
    for record in records:
        assert len(record["images"]) == (2 if record["id"] == "line-0" else 1)
        for path in record["images"]:
            with Image.open(tmp_path / path) as image:
                assert image.size == (64, 64)
    # nothing else was written (a download cut short by the kill may leave a hidden .part file)
    written_names = {Path(path).name for record in records for path in record["images"]} | {"results.jsonl"}
    assert {p.name for p in out.iterdir() if not p.name.endswith(".part")} == written_names
    # one job per line, each image charged once: the lines in flight were picked up, not sent anew
    made = jobs_of(slow, name)
    assert len(made) == len(lines) and len({j["idempotency_key"] for j in made}) == len(lines)
    money = slow.money(name)
    assert (money.charges, money.charged) == (images, images * DEMO_MICROS)
    assert money.committed == money.ledger == images * DEMO_MICROS

    # once more: everything is done, nothing is sent
    again = run(slow, key, "batch", "prompts.jsonl", "--out", "out", "--json", cwd=tmp_path)
    assert again.returncode == 0 and json.loads(again.stdout)["skipped"] == len(lines)
    assert len(jobs_of(slow, name)) == len(lines) and slow.money(name).charged == images * DEMO_MICROS


def test_ctrl_c_stops_a_batch_at_once_and_it_resumes(slow_embedded: Stack, tmp_path: Path) -> None:
    key = slow_embedded.create_key("cli-batch-sigint")
    lines = write_batch(tmp_path / "prompts.jsonl", 6)
    results = tmp_path / "out" / "results.jsonl"
    results.parent.mkdir()
    results.write_text('{"id": "line-5", "status": "succ')  # a record cut short by an earlier kill
    argv = [str(BIN / "imagegate"), "batch", "prompts.jsonl", "--out", "out", "--concurrency", "2"]
    batch = subprocess.Popen(
        argv, env=cli_env(slow_embedded, key), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 60
        while len(results_of_complete(results)) < 1 and time.monotonic() < deadline and batch.poll() is None:
            time.sleep(0.05)
        batch.send_signal(signal.SIGINT)
        stopped = time.monotonic()
        _, stderr = batch.communicate(timeout=30)
    finally:
        batch.kill()
    assert batch.returncode == 130 and "Interrupted" in stderr
    assert time.monotonic() - stopped < 10  # it did not wait for the lines in flight
    resumed = run(slow_embedded, key, "batch", "prompts.jsonl", "--out", "out", "--json", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert sorted(r["id"] for r in results_of_complete(results)) == sorted(line["id"] for line in lines)
    images = sum(line["n"] for line in lines)
    assert len(jobs_of(slow_embedded, "cli-batch-sigint")) == len(lines)
    assert slow_embedded.money("cli-batch-sigint").charged == images * DEMO_MICROS


def results_of_complete(path: Path) -> list[dict[str, Any]]:
    """The records of a results file, without a line cut short."""
    found = []
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            found.append(json.loads(line))
        except ValueError:
            continue
    return found


def test_a_bad_batch_file_sends_nothing(slow_embedded: Stack, tmp_path: Path) -> None:
    key = slow_embedded.create_key("cli-batch-bad")
    (tmp_path / "dup.jsonl").write_text('{"id": "a", "prompt": "x"}\n{"id": "a", "prompt": "y"}\n')
    (tmp_path / "path.jsonl").write_text('{"id": "../up", "prompt": "x"}\n')
    (tmp_path / "broken.jsonl").write_text('{"id": "a", "prompt": "x"}\nnot json\n')
    for file, said in (("dup.jsonl", "already used on line 1"), ("path.jsonl", "'id'"), ("broken.jsonl", ":2")):
        done = run(slow_embedded, key, "batch", file, "--out", "out", cwd=tmp_path)
        assert done.returncode == 2 and said in done.stderr, (file, done.stderr)
    assert jobs_of(slow_embedded, "cli-batch-bad") == []


def test_a_batch_with_a_refused_line_is_partial_and_retries_failed_lines(
    gw: Stack, key: str, upstream: FakeUpstream, tmp_path: Path
) -> None:
    upstream.add_fault("gemini", "safety_prompt", times=1, prompt_contains="blocked")
    (tmp_path / "p.jsonl").write_text(
        json.dumps({"id": "ok", "prompt": "fine", "model": "gemini-3-pro-image"})
        + "\n"
        + json.dumps({"id": "blocked", "prompt": "blocked once", "model": "gemini-3-pro-image"})
        + "\n"
        + json.dumps({"id": "bad", "prompt": "bad size", "size": "7x7000000"})
        + "\n"
    )
    done = run(gw, key, "batch", "p.jsonl", "--out", "o", "--json", cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    by_id = {r["id"]: r for r in results_of(tmp_path / "o" / "results.jsonl")}
    assert by_id["ok"]["status"] == "succeeded" and by_id["blocked"]["status"] == "failed"
    assert by_id["blocked"]["error"]["code"] == "moderation_blocked"
    assert by_id["bad"]["job_id"] is None and by_id["bad"]["error"]["status"] == 400

    # the fault is spent: a retry of the failed lines makes the blocked one anew
    retried = run(gw, key, "batch", "p.jsonl", "--out", "o", "--json", "--retry-failed", cwd=tmp_path)
    summary = json.loads(retried.stdout)
    assert summary["skipped"] == 1 and summary["statuses"] == {"failed": 1, "succeeded": 2}
    assert retried.returncode == 1
    latest = {r["id"]: r for r in results_of(tmp_path / "o" / "results.jsonl")}
    assert latest["blocked"]["status"] == "succeeded" and latest["blocked"]["job_id"] != by_id["blocked"]["job_id"]
