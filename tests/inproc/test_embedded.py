"""Embedded mode in one process: its worker runs the images of its own gateway, also when another
gateway ran before it in the process, and a second embedded worker is refused while one runs; and
the settings these tests build are the ones they give, whatever the machine's environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.inproc.gateway import explicit_settings, running_gateway


@pytest.mark.anyio
async def test_gateways_started_one_after_another_each_run_their_own_images(tmp_path: Path) -> None:
    jobs: list[str] = []
    for name in ("first", "second"):
        async with running_gateway(tmp_path / name) as gw:
            key = await gw.create_key(name)
            response = await gw.generate(key, {"model": "demo", "prompt": name, "size": "64x64"})
            assert response.status_code == 200, response.text
            jobs.append(response.headers["x-imagegate-job-id"])
            # the image was made and recorded by this gateway's worker, in this gateway's database
            assert [j["id"] for j in gw.rows("SELECT id FROM jobs WHERE status = 'succeeded'")] == [jobs[-1]]

            if name == "first":
                with pytest.raises(RuntimeError, match="an embedded worker is already running"):
                    async with running_gateway(tmp_path / "concurrent"):
                        pass
    assert jobs[0] != jobs[1]


def test_the_settings_of_these_tests_ignore_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGEGATE_OPENAI_API_KEY", "sk-from-the-machine")
    monkeypatch.setenv("IMAGEGATE_PORT", "9")
    settings = explicit_settings(data_dir=Path("unused"))
    assert settings.openai_api_key is None and settings.port == 2407
