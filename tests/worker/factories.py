"""Plain factories for database rows, shaped as the API's submit writes them, and a synchronous
session on a worker runtime's database (:func:`db`) for tests to write and read rows with while
the worker itself uses its async engine."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from core.config import Settings
from core.db import create_sync_engine, sync_sessionmaker
from core.generation import Dialect, GenerationRequest
from core.ids import new_id
from core.jobs import ImageStatus, JobStatus
from core.keys import generate_key
from core.models import ApiKey, Job, JobImage
from core.models.ledger import LedgerEntry
from core.models.types import utcnow
from core.planning import plan_routes
from core.routing import Catalogue

_CATALOGUE = Catalogue.load(configured={"demo"})

_ENGINES: dict[str, tuple[Engine, sessionmaker[Session]]] = {}


class _HasSettings(Protocol):
    @property
    def settings(self) -> Settings: ...


def db(runtime: _HasSettings) -> sessionmaker[Session]:
    """Synchronous sessions on ``runtime``'s database, one small engine per database URL."""
    url = runtime.settings.resolved_database_url
    if url not in _ENGINES:
        engine = create_sync_engine(url, pool_size=2, max_overflow=2)
        _ENGINES[url] = (engine, sync_sessionmaker(engine))
    return _ENGINES[url][1]


def dispose_engines() -> None:
    for engine, _ in _ENGINES.values():
        engine.dispose()
    _ENGINES.clear()


def make_api_key(session: Session, *, name: str | None = None) -> ApiKey:
    new = generate_key()
    key = ApiKey(
        id=new.id, name=name or f"test-{new.id}", prefix=new.prefix, secret_hash=new.secret_hash
    )
    session.add(key)
    session.flush()
    return key


def make_job(
    session: Session,
    api_key: ApiKey,
    *,
    prompt: str = "a lighthouse in the fog",
    n: int = 1,
    size: str | None = "96x64",
    catalogue: Catalogue | None = None,
    **request_fields: Any,
) -> Job:
    """A queued job whose routes are what submit plans for the request (core.planning.plan_routes)
    with the demo model by default (``catalogue`` offers others)."""
    request = GenerationRequest(prompt=prompt, n=n, size=size, **request_fields)
    route_plan = plan_routes(catalogue or _CATALOGUE, request)
    job = Job(
        id=new_id("job"),
        api_key_id=api_key.id,
        dialect=Dialect.OPENAI_IMAGES,
        request=request.model_dump(mode="json", exclude_none=True),
        routes=[route.model_dump(mode="json") for route in route_plan.routes],
        model=route_plan.model,
        status=JobStatus.QUEUED,
        n=n,
        succeeded=0,
        failed=0,
        canceled=0,
        created_at=utcnow(),
    )
    session.add(job)
    session.flush()
    return job


def make_image(
    session: Session,
    job: Job,
    *,
    index: int = 0,
    status: ImageStatus = ImageStatus.QUEUED,
    attempts: int = 0,
    enqueued_at: datetime | None = None,
    lease_until: datetime | None = None,
    **fields: Any,
) -> JobImage:
    image = JobImage(
        id=new_id("img"),
        job_id=job.id,
        index=index,
        status=status,
        attempts=attempts,
        enqueued_at=enqueued_at or utcnow(),
        lease_until=lease_until,
        **fields,
    )
    session.add(image)
    session.flush()
    return image


def hold(session: Session, key: ApiKey, job: Job, *, per_image: int) -> None:
    """What submit's hold leaves behind: the job's hold per image, the hold row, the key's
    committed spend moved by it."""
    job.hold_per_image_micros = per_image
    key.committed_micros += per_image * job.n
    session.add(LedgerEntry(api_key_id=key.id, job_id=job.id, kind="hold", amount_micros=per_image * job.n,
                            upstream_cost_micros=0, model=job.model))
    session.flush()
