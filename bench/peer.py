"""The peer gateway for ``make bench-peer``: LiteLLM's proxy (https://docs.litellm.ai/docs/proxy/configs),
one uvicorn worker and no database, its one image model pointed at the bench's fake upstream.

It is installed by ``make bench-peer`` into a venv of its own (``.bench-peer-venv``, from
``bench/peer-requirements.txt``) and started here as its users start it, ``litellm --config``. The
model is an OpenAI one (``openai/<model>`` with ``api_base`` at the fake's ``/v1``,
``model_info.mode: image_generation``), so the client's ``POST /v1/images/generations`` reaches the
fake's OpenAI Images endpoint exactly as imagegate's does.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from bench import fake
from tests.harness import Process, free_port, spawn, wait_http_ok

START_TIMEOUT_S = 300.0  # it imports for a minute on a busy 2-core machine


def config(model: str, upstream_url: str, master_key: str) -> dict[str, object]:
    """LiteLLM's config.yaml (JSON is YAML): one image model, the master key, nothing stored."""
    return {
        "model_list": [{
            "model_name": model,
            "litellm_params": {"model": f"openai/{model}", "api_base": f"{upstream_url}/v1",
                               "api_key": fake.OPENAI_KEY, "timeout": 120},
            "model_info": {"mode": "image_generation"},
        }],
        "general_settings": {"master_key": master_key},
        # drop_params: LiteLLM refuses `response_format` for gpt-image models unless told to drop
        # what the model does not take (the images come back as b64_json either way)
        "litellm_settings": {"telemetry": False, "request_timeout": 120, "drop_params": True},
    }


@dataclass
class LiteLLMProcess:
    binary: Path
    upstream_url: str
    model: str
    workdir: Path
    port: int = field(default_factory=free_port)
    key: str = field(default_factory=lambda: "sk-bench-" + secrets.token_hex(16))
    process: Process | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LiteLLMProcess:
        path = self.workdir / "litellm-config.yaml"
        path.write_text(json.dumps(config(self.model, self.upstream_url, self.key), indent=2))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("IMAGEGATE_", "DATABASE_URL", "OPENAI_"))}
        # the model cost map shipped in the package, not a download at start-up (the bench is offline)
        env |= {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"}
        self.process = spawn("litellm", [str(self.binary), "--config", str(path), "--host", "127.0.0.1",
                                         "--port", str(self.port), "--num_workers", "1"],
                             env=env, cwd=self.workdir, log=self.workdir / "litellm.log")
        wait_http_ok(self.process, self.base_url + "/health/liveliness", timeout=START_TIMEOUT_S)
        return self

    def version(self) -> str:
        """The installed LiteLLM's version, from its venv's package metadata."""
        done = subprocess.run([str(self.binary.parent / "python"), "-c",
                               "import importlib.metadata as m; print(m.version('litellm'))"],
                              capture_output=True, text=True, timeout=30)
        return done.stdout.strip() or "?"

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
