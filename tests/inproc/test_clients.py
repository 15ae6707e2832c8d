"""What real clients need from the gateway, through HTTP on the embedded app in this process: the
rules about what is not the user's words (a coding agent's scaffolding and system prompt), the
default model for an Anthropic client's own model id, conversations that edit the previous
picture, parts in the caller's order, and CORS on answers, errors and preflights.
"""

from __future__ import annotations

import base64
import io
from collections.abc import AsyncIterator
from typing import Any

import pytest
from PIL import Image

from tests.inproc.gateway import Gateway, Key, running_gateway

pytestmark = pytest.mark.anyio

ANTHROPIC = {"anthropic-version": "2023-06-01"}
REMINDER = "<system-reminder>\nToday's date is 2026-12-01.\n</system-reminder>\n\n"
AGENT_SYSTEM = [{"type": "text", "text": "You are an interactive agent that helps users with software engineering."}]
TOOLS = [{"name": "Bash", "description": "Run a command", "input_schema": {"type": "object"}}]


@pytest.fixture(scope="module")
async def gw(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Gateway]:
    async with running_gateway(tmp_path_factory.mktemp("clients"), max_body_mb=0.25) as gateway:
        yield gateway


async def job_of(gw: Gateway, key: Key, job_id: str) -> dict[str, Any]:
    return await gw.poll(key, job_id)


def png_data_url(colour: tuple[int, int, int] = (200, 40, 40)) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), colour).save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


# -- coding agents ---------------------------------------------------------------------------------


async def test_a_coding_agents_request_draws_the_users_words_and_says_what_it_left_out(gw: Gateway) -> None:
    key = await gw.create_key()
    response = await gw.http.post("/v1/messages", headers={**key.auth, **ANTHROPIC}, json={
        "model": "claude-sonnet-4-5", "max_tokens": 32000, "system": AGENT_SYSTEM, "tools": TOOLS,
        "messages": [{"role": "user", "content": [{"type": "text", "text": REMINDER},
                                                  {"type": "text", "text": "a red fox"}]}]})
    assert response.status_code == 200, response.text
    assert response.json()["model"] == "demo-image"
    job = await job_of(gw, key, response.headers["x-imagegate-job-id"])
    assert job["request"]["prompt"] == "a red fox" and "system" not in job["request"]
    assert job["applied"]["adjusted"]["model"] == "claude-sonnet-4-5 -> demo-image"
    assert job["applied"]["ignored"] == ["<system-reminder>", "tools", "system"]
    assert job["images"][0]["revised_prompt"].startswith("a red fox")  # the demo drew the user's words


async def test_chat_with_tools_is_an_agent_too(gw: Gateway) -> None:
    key = await gw.create_key()
    response = await gw.http.post("/v1/chat/completions", headers=key.auth, json={
        "model": "demo", "tools": [{"type": "function", "function": {"name": "f"}}],
        "messages": [{"role": "system", "content": "You are a coding agent."}, {"role": "user", "content": "a fox"}]})
    job = await job_of(gw, key, response.headers["x-imagegate-job-id"])
    assert "system" not in job["request"] and job["applied"]["ignored"] == ["tools", "system"]


# -- conversations ---------------------------------------------------------------------------------


async def test_a_follow_up_edits_the_picture_of_the_previous_answer(gw: Gateway) -> None:
    key = await gw.create_key()
    first = await gw.http.post("/v1/messages", headers={**key.auth, **ANTHROPIC}, json={
        "model": "demo", "messages": [{"role": "user", "content": "a red square"}]})
    answer = first.json()["content"][0]["text"]
    follow_up = await gw.http.post("/v1/messages", headers={**key.auth, **ANTHROPIC}, json={
        "model": "demo", "messages": [{"role": "user", "content": "a red square"},
                                      {"role": "assistant", "content": answer},
                                      {"role": "user", "content": "now make it blue"}]})
    assert follow_up.status_code == 200, follow_up.text
    job = await job_of(gw, key, follow_up.headers["x-imagegate-job-id"])
    request = job["request"]
    assert request["prompt"] == "now make it blue" and len(request["input_images"]) == 1
    assert request["history"][1] == {"role": "model", "parts": [
        {"text": "Here's your image:\n\na red square (demo image 1 of 1)"}, {"image": 0}]}


async def test_chat_message_images_of_an_earlier_answer_are_edited(gw: Gateway) -> None:
    key = await gw.create_key()
    response = await gw.http.post("/v1/chat/completions", headers=key.auth, json={"model": "demo", "messages": [
        {"role": "user", "content": "a square"},
        {"role": "assistant", "content": None, "images": [{"type": "image_url", "image_url": {"url": png_data_url()}}]},
        {"role": "user", "content": "make it blue"}]})
    assert response.status_code == 200, response.text
    job = await job_of(gw, key, response.headers["x-imagegate-job-id"])
    assert len(job["request"]["input_images"]) == 1 and job["request"]["history"][1]["role"] == "model"


# -- CORS ------------------------------------------------------------------------------------------


async def test_preflights_answers_and_errors_carry_cors_headers(gw: Gateway) -> None:
    origin = {"Origin": "http://127.0.0.1:8000"}
    preflight = await gw.http.options("/v1beta/models/demo:generateContent", headers={
        **origin, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type, x-goog-api-key, anthropic-version"})
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "*"
    assert "x-goog-api-key" in preflight.headers["access-control-allow-headers"].lower()
    for response in (await gw.http.get("/v1/models", headers=origin),  # 401
                     await gw.http.get("/v1/no-such-route", headers=origin),  # 404
                     await gw.http.post("/v1/images/generations", headers=origin, content=b"x" * 300_000)):  # 413
        assert response.status_code in (401, 404, 413) and response.headers["access-control-allow-origin"] == "*"


# -- Gemini under /v1 -------------------------------------------------------------------------------


async def test_gemini_under_v1_answers_errors_in_googles_shape(gw: Gateway) -> None:
    missing = await gw.http.post("/v1/models/demo:generateContent", json={"contents": [{"parts": [{"text": "x"}]}]})
    assert missing.status_code == 401 and missing.json()["error"]["status"] == "UNAUTHENTICATED"
    key = await gw.create_key()
    listed = await gw.http.get("/v1/models/nope", headers={"x-goog-api-key": key.secret,
                                                          "x-goog-api-client": "google-genai-sdk/3.4.0"})
    assert listed.status_code == 404 and listed.json()["error"]["status"] == "NOT_FOUND"
