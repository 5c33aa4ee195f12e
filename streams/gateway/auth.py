"""Bearer tokens for the gateway, read from a secret file, each with an allow-list of models.

The file (``KINFER_GATEWAY_TOKENS_FILE``, a mounted secret) is JSON::

    {"tokens": [
        {"name": "search-team", "token": "<at least 16 characters>", "models": ["minilm"]},
        {"name": "ops", "sha256": "<hex sha256 of the token>", "models": ["*"]}
    ]}

``name`` says who a token belongs to (what logs may show: never the token); ``token`` is the
token itself, or ``sha256`` its digest, so the file need not hold it; ``models`` lists the
model names it may use, ``"*"`` every model. Only digests are kept in memory, and a presented
token is compared with every entry's digest in constant time (`hmac.compare_digest`).
The file is read again when it changes (checked at most once a second), so a rotated secret
takes effect without a restart; a file that no longer parses keeps the previous tokens and is
logged.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import orjson

from streams.errors import KinferError
from streams.gateway.errors import Forbidden, Unauthenticated

__all__ = [
    "ANY_MODEL",
    "Access",
    "Grant",
    "OpenAccess",
    "TokenFile",
    "TokenFileError",
    "TokenTable",
    "bearer_token",
]

log = logging.getLogger(__name__)

ANY_MODEL = "*"
MIN_TOKEN_CHARS = 16
#: how often the file's modification time is looked at
RELOAD_CHECK_S = 1.0


class TokenFileError(KinferError):
    """The token file cannot be used; names the file and the entry, never a token."""

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(f"gateway token file {path}: {reason}")


@dataclass(frozen=True, slots=True)
class Grant:
    """Who a valid token belongs to, and the models it may use (None: every model)."""

    name: str
    models: frozenset[str] | None

    def allows(self, model: str) -> bool:
        """Whether this token may use ``model``."""
        return self.models is None or model in self.models


@dataclass(frozen=True, slots=True)
class _Entry:
    digest: bytes
    grant: Grant


class TokenTable:
    """The tokens of one version of the file."""

    def __init__(self, entries: Sequence[_Entry]) -> None:
        self._entries = tuple(entries)

    def __len__(self) -> int:
        return len(self._entries)

    @classmethod
    def parse(cls, text: bytes, path: Path | str = "<tokens>") -> TokenTable:
        """The table of a token file's contents; TokenFileError when it is not usable."""
        try:
            doc = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise TokenFileError(path, f"not JSON: {exc}") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("tokens"), list):
            raise TokenFileError(path, 'expected {"tokens": [{"name", "token", "models"}, ...]}')
        entries = [_entry(path, index, item) for index, item in enumerate(doc["tokens"])]
        if not entries:
            raise TokenFileError(path, "lists no tokens")
        digests = [entry.digest for entry in entries]
        if len(set(digests)) != len(digests):
            raise TokenFileError(path, "the same token is listed twice")
        return cls(entries)

    def grant_for(self, token: str) -> Grant | None:
        """The grant of ``token``, or None; every entry is compared, in constant time each."""
        digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        found: Grant | None = None
        for entry in self._entries:
            if hmac.compare_digest(digest, entry.digest):
                found = entry.grant
        return found


def _entry(path: Path | str, index: int, item: Any) -> _Entry:
    where = f"tokens[{index}]"
    if not isinstance(item, Mapping):
        raise TokenFileError(path, f"{where} must be an object")
    unknown = set(item) - {"name", "token", "sha256", "models"}
    if unknown:
        raise TokenFileError(path, f"{where} has unknown fields {sorted(unknown)}")
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise TokenFileError(path, f"{where} needs a 'name' (who the token belongs to)")
    where = f"{where} ({name!r})"
    token, hexdigest = item.get("token"), item.get("sha256")
    if (token is None) == (hexdigest is None):
        raise TokenFileError(path, f"{where} needs exactly one of 'token' and 'sha256'")
    if token is not None:
        if not isinstance(token, str) or len(token) < MIN_TOKEN_CHARS:
            raise TokenFileError(
                path, f"{where}: a token has at least {MIN_TOKEN_CHARS} characters"
            )
        digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
    else:
        try:
            digest = bytes.fromhex(hexdigest) if isinstance(hexdigest, str) else b""
        except ValueError:
            digest = b""
        if len(digest) != 32:
            raise TokenFileError(path, f"{where}: 'sha256' must be 64 hex digits")
    models = item.get("models")
    if not isinstance(models, list) or not models or not all(isinstance(m, str) for m in models):
        raise TokenFileError(path, f"{where} needs 'models': a list of model names, or [\"*\"]")
    allowed = None if ANY_MODEL in models else frozenset(models)
    return _Entry(digest, Grant(name, allowed))


class Access(Protocol):
    """Who may call: a `TokenFile`, or `OpenAccess` when authentication is off."""

    def check(self, authorization: str | None, model: str | None = None) -> Grant | None:
        """The caller's grant (None when authentication is off), allowed to use ``model``."""
        ...


class OpenAccess:
    """No authentication: every caller may use every model (loopback, or explicitly allowed)."""

    def check(self, authorization: str | None, model: str | None = None) -> Grant | None:
        return None


class TokenFile:
    """The token file, read again when it changes; `check` authenticates and authorises."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._table, self._stamp = self._read()
        self._checked_at = time.monotonic()

    def _read(self) -> tuple[TokenTable, tuple[int, int]]:
        try:
            stat = self.path.stat()
            text = self.path.read_bytes()
        except OSError as exc:
            raise TokenFileError(self.path, f"cannot be read: {exc.strerror or exc}") from None
        return TokenTable.parse(text, self.path), (stat.st_mtime_ns, stat.st_size)

    def table(self) -> TokenTable:
        """The current tokens (the file is looked at again at most once a second)."""
        now = time.monotonic()
        if now - self._checked_at >= RELOAD_CHECK_S:
            self._checked_at = now
            try:
                stat = os.stat(self.path)
                if (stat.st_mtime_ns, stat.st_size) != self._stamp:
                    self._table, self._stamp = self._read()
                    log.info("gateway tokens reloaded from %s: %d", self.path, len(self._table))
            except (OSError, TokenFileError) as exc:
                log.error("gateway tokens kept as they were: %s", exc)
        return self._table

    def check(self, authorization: str | None, model: str | None = None) -> Grant:
        """The grant of the request's ``Authorization`` header, allowed to use ``model``.

        Raises:
            Unauthenticated: no ``Bearer`` token, or one not in the file.
            Forbidden: a valid token whose models do not include ``model``.
        """
        token = bearer_token(authorization)
        grant = self.table().grant_for(token)
        if grant is None:
            raise Unauthenticated("invalid bearer token")
        if model is not None and not grant.allows(model):
            raise Forbidden(model)
        return grant


def bearer_token(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header, or Unauthenticated."""
    if not authorization:
        raise Unauthenticated("missing bearer token: send 'Authorization: Bearer <token>'")
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("the Authorization header must be 'Bearer <token>'")
    return token.strip()
