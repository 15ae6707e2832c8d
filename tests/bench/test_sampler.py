"""bench/sampler.py's categories: a stack belongs to the innermost frame's category."""

from __future__ import annotations

from bench.sampler import categorize


def test_an_image_written_on_a_thread_counts_as_file_io_not_as_threads() -> None:
    stack = ("threading.py:_bootstrap:995;futures/thread.py:_worker:83;futures/thread.py:run:58;"
             "core/storage/local.py:put:58")
    assert categorize(stack) == "image bytes: file write/read"


def test_a_wait_in_the_database_driver_counts_as_database() -> None:
    stack = "asyncio/base_events.py:run_forever:608;core/db.py:run_alone:221;.venv/psycopg/cursor_async.py:execute:97"
    assert categorize(stack) == "database driver + SQLAlchemy"
