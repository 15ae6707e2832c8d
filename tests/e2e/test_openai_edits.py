"""``POST /v1/images/edits`` through the openai SDK (multipart) and as JSON, on the demo model in
both modes and on real upstream protocols through the fake upstream."""

from __future__ import annotations

import base64
import io
import json

import httpx
import openai
import pytest
import sqlalchemy as sa
from PIL import Image

from tests.fakes.upstream import FakeUpstream
from tests.harness import Stack

pytestmark = pytest.mark.integration


def _png(size: tuple[int, int], colour: tuple[int, ...] = (200, 20, 20), mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def _decode(b64: str | None) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(b64 or "")))
    image.load()
    return image


def _data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def test_sdk_edit_with_one_file_on_the_demo_model(stack: Stack) -> None:
    client = openai.OpenAI(base_url=stack.base_url + "/v1", api_key=stack.create_key(f"edit1-{stack.mode}"),
                           max_retries=0)
    source = _png((300, 200))
    result = client.images.edit(model="demo", image=("red.png", source, "image/png"), prompt="a caption",
                                size="256x256")
    edited = _decode(result.data[0].b64_json)
    assert edited.size == (256, 256)
    # the demo edit paints over the input: the red of the source shows in a corner
    assert edited.convert("RGB").getpixel((1, 1)) == (200, 20, 20)


def test_input_images_are_stored_once_and_never_inlined_in_rows(stack: Stack) -> None:
    key = stack.create_key(f"edit-store-{stack.mode}")
    source = _png((64, 64), (1, 2, 3))
    for _ in range(2):
        response = httpx.post(f"{stack.base_url}/v1/images/edits", headers={"Authorization": f"Bearer {key}"},
                              json={"model": "demo", "prompt": "again", "size": "64x64",
                                    "images": [{"image_url": _data_url(source)}]}, timeout=60)
        assert response.status_code == 200, response.text
    stored = list((stack.tmp / "data" / "images" / "inputs").rglob("*.png"))
    assert [p.read_bytes() for p in stored].count(source) == 1
    engine = stack.db()
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT request FROM jobs")).scalars().all()
    finally:
        engine.dispose()
    requests = [r if isinstance(r, dict) else json.loads(r) for r in rows]
    edits = [r for r in requests if r.get("input_images")]
    assert edits and all(r["input_images"][0]["object_key"].startswith("inputs/") for r in edits)
    assert base64.b64encode(source).decode()[:40] not in json.dumps(requests)


@pytest.mark.parametrize(("body", "param", "code"), [
    ({"prompt": "x", "images": []}, "image", "missing_required_parameter"),
    ({"prompt": "x", "images": [{"image_url": "data:image/png;base64,@@@"}]}, "images[0]", "invalid_image"),
    ({"prompt": "x", "images": [{"image_url": "http://127.0.0.1:9/x.png"}]}, "images[0]", "invalid_image_url"),
    ({"prompt": "x", "images": [{"image_url": "http://169.254.169.254/latest/meta-data"}]}, "images[0]",
     "invalid_image_url"),
    ({"prompt": "x", "images": [{"file_id": "file-123"}]}, "images[0]", "invalid_value"),
])
def test_bad_edit_inputs_are_400_naming_the_field_and_store_nothing(
    stack: Stack, body: dict[str, object], param: str, code: str
) -> None:
    key = stack.create_key(f"edit-bad-{stack.mode}-{abs(hash(json.dumps(body)))}")
    before = stack.count_rows()
    response = httpx.post(f"{stack.base_url}/v1/images/edits", json={"model": "demo", **body},
                          headers={"Authorization": f"Bearer {key}"}, timeout=30)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"].startswith(param) and error["code"] == code
    assert stack.count_rows() == before


def test_mask_of_another_size_is_refused(stack: Stack) -> None:
    client = openai.OpenAI(base_url=stack.base_url + "/v1", api_key=stack.create_key(f"mask-{stack.mode}"),
                           max_retries=0)
    with pytest.raises(openai.BadRequestError) as caught:
        client.images.edit(model="demo", image=("a.png", _png((64, 64)), "image/png"),
                           mask=("m.png", _png((32, 32), (0, 0, 0, 0), "RGBA"), "image/png"), prompt="x")
    assert isinstance(caught.value.body, dict) and caught.value.body["param"] == "mask"


def test_sdk_edit_with_two_files_and_a_mask_reaches_the_openai_upstream(
    client: openai.OpenAI, upstream: FakeUpstream
) -> None:
    first, second = _png((1024, 1024), (10, 10, 200)), _png((512, 512), (10, 200, 10))
    mask = _png((1024, 1024), (0, 0, 0, 0), "RGBA")
    result = client.images.edit(model="gpt-image-1.5", image=[("a.png", first, "image/png"),
                                                                ("b.png", second, "image/png")],
                                mask=("mask.png", mask, "image/png"), prompt="merge them", n=2,
                                input_fidelity="high", size="1024x1024")
    assert len(result.data) == 2
    assert {_decode(d.b64_json).size for d in result.data} == {(1024, 1024)}
    call = upstream.calls[-1]
    assert call.endpoint == "openai_edits" and call.files is not None
    assert [f[2] for f in call.files["image[]"]] == [first, second]
    assert call.files["mask"][0][2] == mask
    assert call.form and call.form["input_fidelity"] == ["high"] and call.form["n"] == ["2"]


def test_json_edit_reaches_a_gemini_model_as_inline_data(gw: Stack, key: str, upstream: FakeUpstream) -> None:
    source = _png((640, 480), (120, 30, 60))
    response = httpx.post(f"{gw.base_url}/v1/images/edits", headers={"Authorization": f"Bearer {key}"}, timeout=60,
                          json={"model": "gemini-3-pro-image", "prompt": "watercolour",
                                "images": [{"image_url": _data_url(source)}]})
    assert response.status_code == 200, response.text
    call = upstream.calls[-1]
    assert call.endpoint == "gemini" and call.json is not None
    parts = call.json["contents"][0]["parts"]
    assert parts[0] == {"text": "watercolour"}
    assert base64.b64decode(parts[1]["inlineData"]["data"]) == source
