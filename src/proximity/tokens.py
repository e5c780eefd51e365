"""The API's bearer token: created on first start, readable by root only, compared in constant time.

Apart from FastAPI, so the CLI's `--api` and `token` commands read it without importing the web
framework (about 0.3 s per command).
"""

from __future__ import annotations

import hmac
import os
import secrets

from proximity.errors import HostError
from proximity.host import Host
from proximity.settings import Settings


class TokenStore:
    def __init__(self, settings: Settings):
        self.path = settings.api_token_file
        self._cached: tuple[tuple[int, int], str | None] | None = None  # (file identity, token)

    def ensure(self) -> str:
        """The token, created (0600) if there is none yet."""
        return self.read() or self.rotate()

    def read(self) -> str | None:
        """The current token; the file is read again only when it changed (`token rotate`)."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        key = (st.st_ino, st.st_mtime_ns)
        if self._cached is None or self._cached[0] != key:
            self._cached = (key, self._parse(self.path.read_bytes()))
        return self._cached[1]

    def _parse(self, raw: bytes) -> str | None:
        """The token in the file; a damaged one (not printable ASCII, too short to be ours) is an error."""
        token = raw.strip()
        if not token:
            return None
        if not (token.isascii() and token.decode().isprintable() and len(token) >= 16 and b" " not in token):
            raise HostError(f"the API token file {self.path} is damaged (not a token Proximity made): make a new "
                            "one with `proximity token rotate` and give it to the API's clients")
        return token.decode()

    def rotate(self) -> str:
        token = secrets.token_urlsafe(32)
        Host().write_text(self.path, token + "\n", mode=0o600)
        os.chmod(self.path, 0o600)
        return token

    def check(self, presented: str) -> bool:
        try:
            expected = self.read()
        except HostError:  # a damaged token file lets nobody in
            return False
        return bool(expected) and hmac.compare_digest(presented.encode(), expected.encode())
