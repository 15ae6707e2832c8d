"""API keys as an operator manages them: one set of rules for the admin API and the CLI.

``POST /admin/keys`` and ``imagegate keys create`` take the same :class:`KeyCreate`, validated
the same way (money by :func:`core.billing.money.parse_usd`, limits as strict integers, a markup
that is a finite positive number, models that the catalogue knows), and run the same functions
below; so what one accepts, the other accepts, and both refuse the rest with a message naming the
field.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictInt
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from core.billing.money import format_usd, parse_decimal, parse_usd
from core.config import Settings
from core.errors import ConflictError, InvalidRequestError, NotFoundError
from core.keys import generate_key
from core.models import ApiKey
from core.models.types import utcnow
from core.repo import keys
from core.routing import Catalogue
from core.ssrf import UnsafeUrl
from core.text import refused_character
from core.webhooks.delivery import MAX_URL, check_webhook_url
from core.webhooks.signing import decode_secret, key_secret

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
    webhook_url: Annotated[str, Field(min_length=1, max_length=MAX_URL)] | None = None
    """The webhook of the key's jobs that name none (checked by the SSRF rules when set)."""
    webhook_secret: Literal["new"] | None = None
    """``new``: the key's jobs are signed with a new secret of its own (shown once); ``None``:
    with the server's ``IMAGEGATE_WEBHOOK_SECRET``."""


@dataclass(frozen=True)
class WebhookPolicy:
    """What setting a key's webhook needs: the server's secret (per-key secrets derive from it)
    and the hosts allowed although private (``IMAGEGATE_FETCH_ALLOW_HOSTS``)."""

    server_secret: str | None = None
    allow: tuple[str, ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings) -> WebhookPolicy:
        secret = settings.webhook_secret.get_secret_value() if settings.webhook_secret else None
        return cls(server_secret=secret, allow=tuple(settings.fetch_allow_hosts))


class KeyCreate(KeyLimits):
    name: Annotated[str, BeforeValidator(_name), Field(min_length=1, max_length=200)]


async def _webhook_columns(limits: KeyLimits, policy: WebhookPolicy) -> dict[str, Any]:
    """The webhook columns of the fields given: a URL that may not receive webhooks, or webhooks
    while the server has no secret, is a 400 naming the field."""
    given = limits.model_fields_set
    values: dict[str, Any] = {}
    wants = ("webhook_url" in given and limits.webhook_url) or ("webhook_secret" in given and limits.webhook_secret)
    if wants and policy.server_secret is None:
        field = "webhook_url" if "webhook_url" in given else "webhook_secret"
        raise InvalidRequestError(f"Invalid value for '{field}': this gateway sends no webhooks "
                                  "(IMAGEGATE_WEBHOOK_SECRET is not set).", param=field, code="webhooks_disabled")
    if "webhook_url" in given:
        if limits.webhook_url is not None:
            try:
                await check_webhook_url(limits.webhook_url, allow=policy.allow)
            except UnsafeUrl as exc:
                raise InvalidRequestError(f"Invalid value for 'webhook_url': {exc}", param="webhook_url",
                                          code="invalid_webhook_url") from None
        values["webhook_url"] = limits.webhook_url
    if "webhook_secret" in given:
        values["webhook_secret_salt"] = secrets.token_hex(16) if limits.webhook_secret == "new" else None
    return values


def _new_webhook_secret(key: ApiKey, values: dict[str, Any], policy: WebhookPolicy) -> str | None:
    """The key's new webhook secret, if ``values`` made one (the only time it is shown)."""
    salt = values.get("webhook_secret_salt")
    if not salt or policy.server_secret is None:
        return None
    return key_secret(decode_secret(policy.server_secret), key_id=key.id, salt=salt)


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


async def create_key(session: AsyncSession, spec: KeyCreate, *, catalogue: Catalogue,
                     webhooks: WebhookPolicy | None = None) -> tuple[ApiKey, str]:
    """Create and commit a key; returns it and its secret (the only time the secret exists)."""
    key, secret, _ = await create_key_with_webhook(session, spec, catalogue=catalogue, webhooks=webhooks)
    return key, secret


async def create_key_with_webhook(session: AsyncSession, spec: KeyCreate, *, catalogue: Catalogue,
                                  webhooks: WebhookPolicy | None = None) -> tuple[ApiKey, str, str | None]:
    """:func:`create_key`, and the key's own webhook secret when ``spec`` asks for one."""
    policy = webhooks or WebhookPolicy()
    new = generate_key()
    hooks = await _webhook_columns(spec, policy)
    values = {"id": new.id, "name": spec.name, "prefix": new.prefix, "secret_hash": new.secret_hash,
              "created_at": utcnow(), "committed_micros": 0, **_columns(spec, catalogue), **hooks}
    if await session.scalar(keys.name_taken(spec.name)) is not None:
        raise ConflictError(f"A key named '{spec.name}' exists already.", param="name")
    try:
        await session.execute(keys.insert_key(values))
        await session.commit()
    except IntegrityError:
        await session.rollback()
        raise ConflictError(f"A key named '{spec.name}' exists already.", param="name") from None
    key = await find_key(session, new.id)
    return key, new.secret, _new_webhook_secret(key, hooks, policy)


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


async def update_key(session: AsyncSession, ident: str, limits: KeyLimits, *, catalogue: Catalogue,
                     webhooks: WebhookPolicy | None = None) -> tuple[ApiKey, str | None]:
    """Change the fields given; returns the key and its new webhook secret, if one was made."""
    policy = webhooks or WebhookPolicy()
    key_id = (await find_key(session, ident)).id
    hooks = await _webhook_columns(limits, policy)
    values = {**_columns(limits, catalogue), **hooks}
    if values:
        await session.execute(keys.set_limits(key_id, values))
        await session.commit()
    session.expire_all()
    key = await find_key(session, key_id)
    return key, _new_webhook_secret(key, hooks, policy)


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
        "webhook_url": key.webhook_url, "webhook_secret": "own" if key.webhook_secret_salt else "server",
    }
