"""Watching for INSERTs and UPDATEs built and run through the ORM (``Session.execute`` of an
``insert``/``update`` statement), which the hot path does not do: it runs statements compiled once
per shape (core/repo/binds.py)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import event
from sqlalchemy.orm import ORMExecuteState, Session


@contextmanager
def orm_writes() -> Iterator[list[str]]:
    """The first line of each ORM-run INSERT or UPDATE of any session while the block runs."""
    built: list[str] = []

    def watch(state: ORMExecuteState) -> None:
        if state.is_update or state.is_insert:
            built.append(str(state.statement).split("\n")[0])

    event.listen(Session, "do_orm_execute", watch)
    try:
        yield built
    finally:
        event.remove(Session, "do_orm_execute", watch)
