"""The API's door: a request's bearer token checked against the token store (proximity.tokens)."""

from __future__ import annotations

from fastapi import HTTPException, Request
from fastapi.security.utils import get_authorization_scheme_param

from proximity.tokens import TokenStore

__all__ = ["TokenStore", "UNAUTHORIZED", "bearer_ok", "require_token"]

UNAUTHORIZED = ("missing or wrong bearer token: send 'Authorization: Bearer <token>' "
                "(see `proximity token show`)")


def bearer_ok(authorization: str | None, store: TokenStore) -> bool:
    """Whether an ``Authorization`` header carries the current token."""
    scheme, credentials = get_authorization_scheme_param(authorization)
    return scheme.lower() == "bearer" and bool(credentials) and store.check(credentials)


async def require_token(request: Request) -> None:
    """Every /api/v1 endpoint: a bearer token, or 401 and nothing done."""
    if not bearer_ok(request.headers.get("Authorization"), request.app.state.context.tokens):
        raise HTTPException(401, UNAUTHORIZED, headers={"WWW-Authenticate": "Bearer"})
