"""The batch file and the results file, as ``imagegate batch`` reads them: the checks made before
anything is sent, the Idempotency-Key that makes a line resumable, and a results file cut short."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from imagegate.batch import BatchFileError, Line, _end_last_line, read_lines, read_results


def test_lines_are_read_with_their_ids_and_bodies(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text('{"id": "a", "prompt": "x", "n": 2}\n\n{"id": 7, "prompt": "y", "size": "64x64"}\n')
    lines = read_lines(path)
    assert [(line.id, line.body, line.number) for line in lines] == [
        ("a", {"prompt": "x", "n": 2}, 1),
        ("7", {"prompt": "y", "size": "64x64"}, 3),
    ]


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ('{"id": "a", "prompt": "x"}\n{"id": "a", "prompt": "y"}\n', "already used on line 1"),
        ('{"prompt": "x"}\n', "'id'"),
        ('{"id": "../etc", "prompt": "x"}\n', "'id'"),
        ('{"id": "a/b", "prompt": "x"}\n', "'id'"),
        ('{"id": true, "prompt": "x"}\n', "'id'"),
        ('{"id": "a"}\n', "'prompt'"),
        ('{"id": "a", "prompt": "  "}\n', "'prompt'"),
        ('["a"]\n', "JSON object"),
        ('{"id": "a", "prompt": "x"}\n{oops\n', "p.jsonl:2: not JSON"),
        ("\n\n", "no lines"),
    ],
)
def test_a_bad_file_is_refused_naming_the_line(tmp_path: Path, text: str, said: str) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text(text)
    with pytest.raises(BatchFileError) as caught:
        read_lines(path)
    assert said in str(caught.value)


def test_the_idempotency_key_is_the_lines_own() -> None:
    line = Line("a", {"prompt": "x", "n": 2}, 1)
    # the same line (whatever its keys' order or its place in the file) has the same key in every run
    assert line.idempotency_key() == Line("a", {"n": 2, "prompt": "x"}, 9).idempotency_key()
    others = {
        Line("b", {"prompt": "x", "n": 2}, 1).idempotency_key(),
        Line("a", {"prompt": "x", "n": 3}, 1).idempotency_key(),
        line.idempotency_key(replacing="job_1"),
    }
    assert line.idempotency_key() not in others and len(others) == 3
    assert len(line.idempotency_key()) <= 255  # the gateway's limit


def test_a_results_file_cut_short_is_read_and_mended(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    path.write_text(
        json.dumps({"id": "a", "status": "failed"})
        + "\n"
        + json.dumps({"id": "a", "status": "succeeded"})
        + "\n"
        + '{"id": "b", "sta'
    )
    assert read_results(path) == {"a": {"id": "a", "status": "succeeded"}}
    _end_last_line(path)
    _end_last_line(path)  # once only
    assert path.read_text().endswith('"sta\n')
    assert read_results(tmp_path / "none.jsonl") == {}
