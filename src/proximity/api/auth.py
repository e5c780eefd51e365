"""The API's bearer token: created on first start, readable by root only, compared in constant time."""

from __future__ import annotations

import hmac
import os
import secrets

from fastapi import HTTPException, Request
from fastapi.security.utils import get_authorization_scheme_param

from proximity.host import Host
from proximity.settings import Settings


class TokenStore:
    def __init__(self, settings: Settings):
        self.path = settings.api_token_file
        self._cached: str | None = None

    def ensure(self) -> str:
        """The token, created (0600) if there is none yet."""
        token = self.read()
        return token if token else self.rotate()

    def read(self) -> str | None:
        try:
            self._cached = self.path.read_text().strip() or None
        except FileNotFoundError:
            self._cached = None
        return self._cached

    def rotate(self) -> str:
        token = secrets.token_urlsafe(32)
        Host().write_text(self.path, token + "\n", mode=0o600)
        os.chmod(self.path, 0o600)
        self._cached = token
        return token

    def check(self, presented: str) -> bool:
        expected = self._cached or self.read()
        return bool(expected) and hmac.compare_digest(presented.encode(), expected.encode())


def require_token(request: Request) -> None:
    """Every /api/v1 endpoint: a bearer token, or 401 and nothing done."""
    scheme, credentials = get_authorization_scheme_param(request.headers.get("Authorization"))
    store: TokenStore = request.app.state.context.tokens
    if scheme.lower() != "bearer" or not credentials or not store.check(credentials):
        raise HTTPException(401, "missing or wrong bearer token: send 'Authorization: Bearer <token>' "
                                 "(see `proximity token show`)", headers={"WWW-Authenticate": "Bearer"})
