"""API keys as an operator manages them: one set of rules for the admin API and the CLI.

``POST /admin/keys`` and ``imagegate keys create`` take the same :class:`KeyCreate`, validated
the same way (money by :func:`core.billing.money.parse_usd`, limits as strict integers, a markup
that is a finite positive number, models that the catalogue knows), and run the same functions
below; so what one accepts, the other accepts, and both refuse the rest with a message naming the
field.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictInt
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from core.billing.money import format_usd, parse_decimal, parse_usd
from core.errors import ConflictError, NotFoundError
from core.keys import generate_key
from core.models import ApiKey
from core.models.types import utcnow
from core.repo import keys
from core.routing import Catalogue
from core.text import refused_character

MAX_LIMIT = 1_000_000
"""The largest requests-per-minute or images-per-minute limit a key may be given."""
MAX_MARKUP = Decimal(100)


def _usd(value: object) -> int:
    return parse_usd(value, what="the amount")


def _markup(value: object) -> Decimal:
    markup = parse_decimal(value, what="the markup")
    if not 0 < markup <= MAX_MARKUP:
        raise ValueError(f"the markup must be above 0 and at most {MAX_MARKUP}, got {value!r}")
    return markup


def _name(value: object) -> object:
    # control characters include NUL; a lone surrogate (from a command line that is not UTF-8)
    # cannot be stored either
    if isinstance(value, str) and (any(ord(c) < 32 or ord(c) == 127 for c in value) or refused_character(value)):
        raise ValueError("a key's name cannot hold control characters or lone surrogates")
    return value


UsdMicros = Annotated[int, BeforeValidator(_usd)]
"""An amount given in dollars (a string or a number), held as integer micro-dollars."""
Limit = Annotated[StrictInt, Field(ge=1, le=MAX_LIMIT)]


class KeyLimits(BaseModel):
    """A key's limits; each field left out is left unchanged (``None`` removes the limit)."""

    model_config = ConfigDict(extra="forbid")

    budget_usd: UsdMicros | None = None
    """Hard cap on everything the key may spend (held in micro-dollars)."""
    monthly_budget_usd: UsdMicros | None = None
    """Hard cap per calendar month, UTC (held in micro-dollars)."""
    rpm: Limit | None = None
    images_per_minute: Limit | None = None
    models: list[str] | None = None
    """Model ids (or aliases) the key may use; ``None``: every offered model."""
    markup: Annotated[Decimal, BeforeValidator(_markup)] | None = None


class KeyCreate(KeyLimits):
    name: Annotated[str, BeforeValidator(_name), Field(min_length=1, max_length=200)]


def _columns(limits: KeyLimits, catalogue: Catalogue) -> dict[str, Any]:
    """The column values of the fields given (an unknown model is a 404 naming it)."""
    given = limits.model_fields_set
    values: dict[str, Any] = {}
    if "models" in given:
        values["models_allowed"] = ([catalogue.resolve(m).spec.id for m in limits.models]
                                    if limits.models is not None else None)
    if "budget_usd" in given:
        values["budget_micros"] = limits.budget_usd
    if "monthly_budget_usd" in given:
        values["monthly_budget_micros"] = limits.monthly_budget_usd
    if "rpm" in given:
        values["rpm"] = limits.rpm
    if "images_per_minute" in given:
        values["images_per_minute"] = limits.images_per_minute
    if "markup" in given:
        values["markup"] = str(limits.markup) if limits.markup is not None else None
    return values


async def create_key(session: AsyncSession, spec: KeyCreate, *, catalogue: Catalogue) -> tuple[ApiKey, str]:
    """Create and commit a key; returns it and its secret (the only time the secret exists)."""
    new = generate_key()
    values = {"id": new.id, "name": spec.name, "prefix": new.prefix, "secret_hash": new.secret_hash,
              "created_at": utcnow(), "committed_micros": 0, **_columns(spec, catalogue)}
    if await session.scalar(keys.name_taken(spec.name)) is not None:
        raise ConflictError(f"A key named '{spec.name}' exists already.", param="name")
    try:
        await session.execute(keys.insert_key(values))
        await session.commit()
    except IntegrityError:
        await session.rollback()
        raise ConflictError(f"A key named '{spec.name}' exists already.", param="name") from None
    return await find_key(session, new.id), new.secret


async def find_key(session: AsyncSession, ident: str) -> ApiKey:
    """A key by id or name; 404 naming it otherwise."""
    key = await session.scalar(keys.by_id_or_name(ident))
    if key is None:
        raise NotFoundError(f"No API key '{ident}'.", param="key", code="key_not_found")
    return key


async def any_key(session: AsyncSession) -> bool:
    return await session.scalar(keys.any_key()) is not None


async def list_keys(session: AsyncSession) -> list[ApiKey]:
    return list(await session.scalars(keys.listing()))


async def update_key(session: AsyncSession, ident: str, limits: KeyLimits, *, catalogue: Catalogue) -> ApiKey:
    key_id = (await find_key(session, ident)).id
    values = _columns(limits, catalogue)
    if values:
        await session.execute(keys.set_limits(key_id, values))
        await session.commit()
    session.expire_all()
    return await find_key(session, key_id)


async def revoke_key(session: AsyncSession, ident: str) -> ApiKey:
    """Revoke a key: it is refused from the next request on. Revoking twice changes nothing."""
    key_id = (await find_key(session, ident)).id
    await session.execute(keys.revoke(key_id, now=utcnow()))
    await session.commit()
    session.expire_all()
    return await find_key(session, key_id)


def key_view(key: ApiKey) -> dict[str, Any]:
    """A key as the admin API shows it: never its secret or its hash."""
    return {
        "id": key.id, "object": "api_key", "name": key.name, "prefix": key.prefix,
        "created_at": int(key.created_at.timestamp()),
        "revoked_at": int(key.revoked_at.timestamp()) if key.revoked_at else None,
        "budget_usd": format_usd(key.budget_micros) if key.budget_micros is not None else None,
        "monthly_budget_usd": format_usd(key.monthly_budget_micros) if key.monthly_budget_micros is not None else None,
        "rpm": key.rpm, "images_per_minute": key.images_per_minute, "models": key.models_allowed,
        "markup": key.markup, "committed_usd": format_usd(key.committed_micros),
    }
