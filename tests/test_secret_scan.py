"""The scan that fails a test run whose logs carry a secret finds each kind, and not what logs
may show (a key's visible prefix, a path without its query)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from tests.secret_scan import leaks_in, scan_files


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        ("key ig-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789_-abcd revoked", "API key"),
        ("upstream said: bad key test-gemini-key", "configured secret 'test-gemini-key'"),
        ("secret whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "webhook secret"),
        ("webhook-signature: v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4=", "webhook signature"),
        ('"GET /v1/files/img_1?expires=1&signature=Zm9vYmFyYmF6cXV4 HTTP/1.1" 200', "URL signature"),
        ("HTTP Request: POST http://hooks.example/in?token=7d1f0c2b9e4a6f83 \"HTTP/1.1 200 OK\"", "URL signature"),
        ("Authorization: Bearer sk-live-0123456789abcdef", "bearer token"),
    ],
)
def test_each_kind_of_secret_is_found(line: str, kind: str) -> None:
    assert [leak.kind for leak in leaks_in([line], where="here")] == [kind]


def test_what_logs_may_show_is_not_a_leak() -> None:
    lines = [
        "job accepted: 3 image(s) of demo-image [key_prefix=ig-FXTWvT-]",
        '127.0.0.1:42758 - "GET /v1/files/img_01a2 HTTP/1.1" 200',
        "signature verified",
    ]
    assert leaks_in(lines, where="here") == []
    # outside the run's temporary directory, which the run's own scan reads
    with tempfile.TemporaryDirectory() as planted:
        (Path(planted) / "stack").mkdir()
        (Path(planted) / "stack" / "api-1.log").write_text("\n".join(lines) + "\nthe key was test-openai-key\n")
        [leak] = scan_files(Path(planted))
    assert leak.where.endswith("api-1.log") and "test-openai-key" in leak.line
