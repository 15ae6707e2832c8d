"""API key secrets (where a request carries one, how they are made and hashed) and signed,
expiring file URLs."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path
from typing import Any

import pytest

from core import signing
from core.keys import extract_key, generate_key, hash_secret

# -- extract_key -----------------------------------------------------------------------------


def extract(
    authorization: str | None = None,
    x_api_key: str | None = None,
    x_goog_api_key: str | None = None,
    query_key: str | None = None,
) -> str | None:
    return extract_key(
        authorization=authorization,
        x_api_key=x_api_key,
        x_goog_api_key=x_goog_api_key,
        query_key=query_key,
    )


def test_bearer_comes_first() -> None:
    assert extract("Bearer ig-a", "ig-b", "ig-c", "ig-d") == "ig-a"


def test_then_x_api_key() -> None:
    assert extract(None, "ig-b", "ig-c", "ig-d") == "ig-b"


def test_then_x_goog_api_key() -> None:
    assert extract(None, None, "ig-c", "ig-d") == "ig-c"


def test_then_query_key() -> None:
    assert extract(None, None, None, "ig-d") == "ig-d"


def test_nothing_gives_none() -> None:
    assert extract() is None


@pytest.mark.parametrize("header", ["bearer ig-a", "BEARER ig-a", "  Bearer   ig-a  "])
def test_bearer_scheme_is_case_insensitive_and_trimmed(header: str) -> None:
    assert extract(header) == "ig-a"


def test_basic_scheme_is_ignored() -> None:
    assert extract("Basic dXNlcjpwYXNz") is None
    assert extract("Basic dXNlcjpwYXNz", x_api_key="ig-b") == "ig-b"


@pytest.mark.parametrize("authorization", ["", "   ", "Bearer", "Bearer    "])
def test_blank_authorization_falls_through(authorization: str) -> None:
    assert extract(authorization, x_goog_api_key="ig-c") == "ig-c"


def test_blank_headers_are_skipped() -> None:
    assert extract(None, "   ", "", " ig-d ") == "ig-d"
    assert extract(None, "  ", " ", "") is None


# -- generate_key ----------------------------------------------------------------------------


def test_generate_key() -> None:
    key = generate_key()
    assert key.secret.startswith("ig-")
    assert len(key.secret) > 40  # 32 random bytes, base64url
    assert key.prefix == key.secret[:10]
    assert len(key.prefix) == 10
    assert key.secret_hash == hash_secret(key.secret)
    assert key.secret_hash != key.secret
    assert key.secret not in key.secret_hash
    assert key.id.startswith("key_")


def test_hash_secret_is_sha256_hex() -> None:
    assert hash_secret("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_generated_keys_differ() -> None:
    a, b = generate_key(), generate_key()
    assert a.secret != b.secret
    assert a.secret_hash != b.secret_hash
    assert a.id != b.id


# -- signing ---------------------------------------------------------------------------------

KEY = b"test-signing-key"


def parts(query: str) -> dict[str, str]:
    return dict(pair.split("=", 1) for pair in query.split("&"))


def test_fresh_signature_verifies() -> None:
    q = parts(signing.signed_query(KEY, "img_1", ttl_s=60))
    assert int(q["expires"]) >= int(time.time()) + 59
    assert signing.verify(KEY, "img_1", q["expires"], q["signature"]) is True


def test_tampered_signature_rejected() -> None:
    q = parts(signing.signed_query(KEY, "img_1", ttl_s=60))
    last = q["signature"][-1]
    bad = q["signature"][:-1] + ("0" if last != "0" else "1")
    assert signing.verify(KEY, "img_1", q["expires"], bad) is False


def test_signature_for_another_file_rejected() -> None:
    q = parts(signing.signed_query(KEY, "img_1", ttl_s=60))
    assert signing.verify(KEY, "img_2", q["expires"], q["signature"]) is False


def test_signature_with_another_key_rejected() -> None:
    q = parts(signing.signed_query(KEY, "img_1", ttl_s=60))
    assert signing.verify(b"other-key", "img_1", q["expires"], q["signature"]) is False


def test_extended_expiry_rejected() -> None:
    """Moving ``expires`` later breaks the signature."""
    q = parts(signing.signed_query(KEY, "img_1", ttl_s=60))
    later = str(int(q["expires"]) + 3600)
    assert signing.verify(KEY, "img_1", later, q["signature"]) is False


def test_expired_signature_rejected() -> None:
    q = parts(signing.signed_query(KEY, "img_1", ttl_s=60, now=time.time() - 120))
    assert int(q["expires"]) < time.time()
    assert signing.verify(KEY, "img_1", q["expires"], q["signature"]) is False


@pytest.mark.parametrize("expires", ["abc", "-5", "1e12", "12.5", "", None])
def test_non_digit_expires_rejected(expires: str | None) -> None:
    signature = signing.sign(KEY, "img_1", 10**12)
    assert signing.verify(KEY, "img_1", expires, signature) is False


def test_missing_signature_rejected() -> None:
    q = parts(signing.signed_query(KEY, "img_1", ttl_s=60))
    assert signing.verify(KEY, "img_1", q["expires"], None) is False
    assert signing.verify(KEY, "img_1", q["expires"], "") is False


@pytest.mark.parametrize("expires", ["²", "9" * 5000])
def test_unparseable_digit_expires_rejected(expires: str) -> None:
    assert signing.verify(KEY, "img_1", expires, "0" * 64) is False


def test_signing_key_is_created_once_and_persisted(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = signing.load_or_create_signing_key(None, data_dir)
    path = data_dir / "url-signing.key"
    assert path.exists()
    assert path.read_text().strip().encode() == first
    assert len(first) == 64  # 32 random bytes as hex
    assert path.stat().st_mode & 0o777 == 0o600
    assert signing.load_or_create_signing_key(None, data_dir) == first
    assert signing.load_or_create_signing_key("", data_dir) == first


def test_configured_signing_key_wins(tmp_path: Path) -> None:
    signing.load_or_create_signing_key(None, tmp_path)  # a stored key exists
    assert signing.load_or_create_signing_key("my-configured-key", tmp_path) == b"my-configured-key"


def test_configured_signing_key_writes_no_file(tmp_path: Path) -> None:
    signing.load_or_create_signing_key("my-configured-key", tmp_path / "data")
    assert not (tmp_path / "data" / "url-signing.key").exists()


@pytest.mark.parametrize("signature", ["é", "0" * 63 + "é", "\u00b2" * 64])
def test_a_signature_that_is_not_ascii_is_refused_not_an_error(signature: str) -> None:
    q = parts(signing.signed_query(KEY, "img_1", ttl_s=60))
    assert signing.verify(KEY, "img_1", q["expires"], signature) is False


def _race_for_the_key(data_dir: str, start: Any, out: Any) -> None:
    start.wait()
    out.put(signing.load_or_create_signing_key(None, Path(data_dir)))


def test_processes_racing_on_an_empty_data_dir_all_get_the_key_on_disk(tmp_path: Path) -> None:
    # ``imagegate serve --workers N``: every process creates the key at once on a fresh data dir
    context = multiprocessing.get_context("fork")
    processes_per_dir, rounds = 6, 10
    for round_ in range(rounds):
        data_dir = tmp_path / f"data-{round_}"
        start, out = context.Barrier(processes_per_dir), context.Queue()
        racers = [context.Process(target=_race_for_the_key, args=(str(data_dir), start, out))
                  for _ in range(processes_per_dir)]
        for racer in racers:
            racer.start()
        for racer in racers:
            racer.join(30)
        assert all(racer.exitcode == 0 for racer in racers), f"round {round_}: a process failed"
        keys = {out.get(timeout=5) for _ in racers}
        on_disk = (data_dir / "url-signing.key").read_text().strip().encode()
        assert keys == {on_disk}, f"round {round_}: {len(keys)} different keys"
        assert sorted(p.name for p in data_dir.iterdir()) == ["url-signing.key"]  # no candidate left over
