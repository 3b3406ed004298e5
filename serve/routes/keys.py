"""API keys, for admins: create (the key is shown once), list, revoke."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path
from pydantic import BaseModel

from runtime.models.api import ApiKeyCreate
from runtime.models.enums import Scope
from runtime.models.records import ApiKey
from runtime.store import api_keys
from serve.auth import require
from serve.deps import SystemDep

router = APIRouter(prefix="/api/v1/keys", tags=["keys"], dependencies=[require(Scope.ADMIN)])


class KeyView(BaseModel):
    """A key as listed: never its secret or hash."""

    id: str
    name: str
    prefix: str
    scopes: list[Scope]
    rate_per_s: float
    burst: int
    revoked: bool

    @classmethod
    def of(cls, key: ApiKey) -> KeyView:
        return cls(
            id=str(key.id),
            name=key.name,
            prefix=key.prefix,
            scopes=key.scopes,
            rate_per_s=key.rate_per_s,
            burst=key.burst,
            revoked=key.revoked,
        )


class NewKey(KeyView):
    key: str
    """The key itself: shown this once, stored only as a hash."""


@router.post("", status_code=201, response_model=NewKey)
async def create_key(body: ApiKeyCreate, system: SystemDep) -> NewKey:
    record, plaintext = await api_keys.create(
        system.pool, body.name, body.scopes, body.rate_per_s, body.burst
    )
    return NewKey(**KeyView.of(record).model_dump(), key=plaintext)


@router.get("", response_model=list[KeyView])
async def list_keys(system: SystemDep) -> list[KeyView]:
    return [KeyView.of(key) for key in await api_keys.list_keys(system.pool)]


@router.delete("/{key}", status_code=204)
async def revoke_key(
    key: Annotated[str, Path(min_length=1, max_length=64, description="Id or prefix.")],
    system: SystemDep,
) -> None:
    """Revoke a key (by id or prefix); it stops working within `http.key_cache_s`."""
    if not await api_keys.revoke(system.pool, key):
        raise HTTPException(404, f"no live key {key}")
