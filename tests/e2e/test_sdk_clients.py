"""Two more clients as their users set them up, only the base URL and the key changed: the OpenAI
Node SDK (``openai`` from the npm registry) and LiteLLM's Python SDK (``litellm`` from PyPI, in a
virtualenv of its own: it is not one of imagegate's dependencies). Each is installed once into a
cache; where it cannot be, its test skips and says why.

Each runs as a script of its own against a gateway whose providers are the fake upstream:
generations, an edit with two files, chat with image output (plain and streamed), and image URLs;
the fake records what reached the upstream.
"""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.e2e.installs import npm_package, python_venv
from tests.fakes.upstream import FakeUpstream
from tests.harness import Stack

pytestmark = pytest.mark.integration

SCRIPT_TIMEOUT_S = 240

NODE_SCRIPT = r"""
const OpenAI = require(process.env.OPENAI_MODULE);
const { toFile } = OpenAI;
const fs = require('fs');

(async () => {
  const client = new OpenAI({ baseURL: process.env.GATEWAY + '/v1', apiKey: process.env.KEY });
  const out = {};
  const generated = await client.images.generate({ model: 'demo-image', prompt: 'two foxes', n: 2,
                                                  size: '1024x1024' });
  out.generated = generated.data.map(d => d.b64_json.length);
  const upstream = await client.images.generate({ model: 'gemini-3-pro-image', prompt: 'a harbour',
                                                 size: '1536x1024' });
  out.upstream = upstream.data.length;
  const files = await Promise.all(['first.png', 'second.png'].map(
    name => toFile(fs.createReadStream(process.env.IMAGES + '/' + name), name, { type: 'image/png' })));
  const edited = await client.images.edit({ model: 'gpt-image-2', image: files, prompt: 'combine them' });
  out.edited = edited.data.length;
  const url = await client.images.generate({ model: 'demo-image', prompt: 'a url', response_format: 'url' });
  out.url = url.data[0].url;
  const chat = await client.chat.completions.create({ model: 'demo-image', modalities: ['image', 'text'],
    messages: [{ role: 'user', content: 'a lighthouse' }] });
  out.chat = chat.choices[0].message.images[0].image_url.url.slice(0, 22);
  const stream = await client.chat.completions.create({ model: 'gemini-3-pro-image', stream: true,
    messages: [{ role: 'user', content: 'a streamed fox' }] });
  out.streamed = 0;
  for await (const chunk of stream) {
    for (const choice of chunk.choices) out.streamed += (choice.delta.images || []).length;
  }
  console.log(JSON.stringify(out));
})().catch(error => { console.error(error); process.exit(1); });
"""

LITELLM_SCRIPT = r"""
import json, os, sys
import litellm

base, key, images = os.environ["GATEWAY"] + "/v1", os.environ["KEY"], os.environ["IMAGES"]
out = {}
generated = litellm.image_generation(model="openai/demo-image", prompt="two foxes", n=2, api_base=base, api_key=key)
out["generated"] = [len(d.b64_json or "") for d in generated.data]
upstream = litellm.image_generation(model="openai/gemini-3-pro-image", prompt="a harbour", api_base=base, api_key=key)
out["upstream"] = len(upstream.data)
with open(f"{images}/first.png", "rb") as first, open(f"{images}/second.png", "rb") as second:
    edited = litellm.image_edit(model="openai/gpt-image-2", image=[first, second], prompt="combine them",
                                api_base=base, api_key=key)
out["edited"] = len(edited.data)
chat = litellm.completion(model="openai/demo-image", messages=[{"role": "user", "content": "a lighthouse"}],
                          modalities=["image", "text"], api_base=base, api_key=key)
message = chat.choices[0].message
out["chat"] = (getattr(message, "images", None) or [{}])[0].get("image_url", {}).get("url", "")[:22]
streamed = litellm.completion(model="openai/gemini-3-pro-image", stream=True, api_base=base, api_key=key,
                              messages=[{"role": "user", "content": "a streamed fox"}])
out["streamed"] = sum(len(getattr(c.choices[0].delta, "images", None) or []) for c in streamed if c.choices)
print(json.dumps(out))
"""


def _images(tmp: Path) -> Path:
    for name, colour in (("first.png", (200, 30, 30)), ("second.png", (30, 30, 200))):
        buffer = io.BytesIO()
        Image.new("RGB", (64, 64), colour).save(buffer, "PNG")
        (tmp / name).write_bytes(buffer.getvalue())
    return tmp


def _run(argv: list[str], env: dict[str, str], cwd: Path) -> dict[str, Any]:
    done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=SCRIPT_TIMEOUT_S,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stdout + done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _check(result: dict[str, Any], upstream: FakeUpstream) -> None:
    assert len(result["generated"]) == 2 and all(size > 1000 for size in result["generated"])
    assert result["upstream"] == 1 and upstream.count("gemini") >= 2  # the generation and the stream
    assert result["edited"] == 1
    [edit] = [c for c in upstream.calls if c.endpoint == "openai_edits"]
    assert len((edit.files or {}).get("image[]", [])) == 2  # both files reached the upstream's edit
    assert result["chat"] == "data:image/png;base64,"
    assert result["streamed"] == 1


def test_the_openai_node_sdk(gw: Stack, key: str, upstream: FakeUpstream, tmp_path: Path) -> None:
    modules, why_not = npm_package("openai", "openai@7")
    if modules is None:
        pytest.skip(f"the OpenAI Node SDK cannot be installed here: {why_not}")
    script = tmp_path / "client.cjs"
    script.write_text(NODE_SCRIPT)
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(tmp_path), "OPENAI_MODULE": str(modules / "openai"),
           "GATEWAY": gw.base_url, "KEY": key, "IMAGES": str(_images(tmp_path))}
    result = _run(["node", str(script)], env, tmp_path)
    _check(result, upstream)
    assert result["url"].startswith(gw.base_url + "/v1/files/")


def test_litellm_as_a_client(gw: Stack, key: str, upstream: FakeUpstream, tmp_path: Path) -> None:
    python, why_not = python_venv("litellm", "litellm==1.106.2")  # the version bench/peer-requirements.in pins
    if python is None:
        pytest.skip(f"LiteLLM cannot be installed here: {why_not}")
    script = tmp_path / "client.py"
    script.write_text(LITELLM_SCRIPT)
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(tmp_path), "GATEWAY": gw.base_url, "KEY": key,
           "IMAGES": str(_images(tmp_path)), "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    _check(_run([str(python), str(script)], env, tmp_path), upstream)
