"""Gateway access: the token file, bearer headers, model allow-lists, when auth may be off."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.gateway import auth
from streams.gateway.auth import OpenAccess, TokenFile, TokenFileError, TokenTable, bearer_token
from streams.gateway.errors import Forbidden, Unauthenticated
from streams.gateway.server import GatewayConfigError, access_for, is_loopback
from streams.settings import Settings

SEARCH = "search-team-token-0123456789"
OPS = "ops-token-abcdefghijklmnop"


def token_file(tmp_path: Path, tokens: list[dict[str, Any]]) -> Path:
    path = tmp_path / "tokens.json"
    path.write_bytes(orjson.dumps({"tokens": tokens}))
    return path


@pytest.fixture
def tokens(tmp_path: Path) -> TokenFile:
    digest = hashlib.sha256(OPS.encode()).hexdigest()
    return TokenFile(
        token_file(
            tmp_path,
            [
                {"name": "search", "token": SEARCH, "models": ["minilm"]},
                {"name": "ops", "sha256": digest, "models": ["*"]},
            ],
        )
    )


def test_a_token_may_use_the_models_it_lists_and_no_others(tokens: TokenFile) -> None:
    grant = tokens.check(f"Bearer {SEARCH}", "minilm")
    assert grant.name == "search"
    with pytest.raises(Forbidden, match="may not use model 'digits'"):
        tokens.check(f"Bearer {SEARCH}", "digits")


def test_a_token_listed_by_its_sha256_may_use_every_model(tokens: TokenFile) -> None:
    assert tokens.check(f"bearer {OPS}", "digits").name == "ops"
    assert tokens.check(f"Bearer {OPS}", None).models is None


@pytest.mark.parametrize(
    ("header", "problem"),
    [
        (None, "missing bearer token"),
        ("", "missing bearer token"),
        (f"Basic {SEARCH}", "must be 'Bearer <token>'"),
        ("Bearer ", "must be 'Bearer <token>'"),
        (f"Bearer {SEARCH}x", "invalid bearer token"),
        (f"Bearer {SEARCH[:-1]}", "invalid bearer token"),
    ],
)
def test_no_or_an_unknown_token_is_unauthenticated(
    tokens: TokenFile, header: str | None, problem: str
) -> None:
    with pytest.raises(Unauthenticated, match=problem) as caught:
        tokens.check(header, "minilm")
    assert SEARCH not in str(caught.value), "a token is never echoed"


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"{", "not JSON"),
        (b'{"token": "x"}', "expected"),
        (b'{"tokens": []}', "lists no tokens"),
        (b'{"tokens": [{"token": "0123456789abcdefg", "models": ["*"]}]}', "needs a 'name'"),
        (b'{"tokens": [{"name": "a", "token": "short", "models": ["*"]}]}', "at least 16"),
        (b'{"tokens": [{"name": "a", "sha256": "ab", "models": ["*"]}]}', "64 hex digits"),
        (b'{"tokens": [{"name": "a", "models": ["*"]}]}', "exactly one of"),
        (b'{"tokens": [{"name": "a", "token": "0123456789abcdefg"}]}', "needs 'models'"),
        (b'{"tokens": [{"name": "a", "token": "0123456789abcdefg", "models": []}]}', "models"),
        (
            b'{"tokens": [{"name": "a", "token": "0123456789abcdefg", "models": ["*"], "x": 1}]}',
            "unknown fields",
        ),
        (
            b'{"tokens": [{"name": "a", "token": "0123456789abcdefg", "models": ["*"]},'
            b' {"name": "b", "token": "0123456789abcdefg", "models": ["*"]}]}',
            "listed twice",
        ),
    ],
)
def test_a_token_file_that_cannot_be_used_is_refused_clearly(content: bytes, problem: str) -> None:
    with pytest.raises(TokenFileError, match=problem) as caught:
        TokenTable.parse(content, "tokens.json")
    assert "0123456789abcdefg" not in str(caught.value), "a token is never echoed"


def test_a_missing_token_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TokenFileError, match="cannot be read"):
        TokenFile(tmp_path / "absent.json")


def test_a_changed_file_is_read_again_and_a_broken_one_keeps_the_tokens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(auth, "RELOAD_CHECK_S", 0.0)
    path = token_file(tmp_path, [{"name": "old", "token": SEARCH, "models": ["*"]}])
    tokens = TokenFile(path)
    assert tokens.check(f"Bearer {SEARCH}").name == "old"
    token_file(tmp_path, [{"name": "new", "token": OPS, "models": ["minilm"]}])
    os.utime(path, ns=(1, 1))  # a distinct mtime even within the clock's resolution
    assert tokens.check(f"Bearer {OPS}").name == "new"
    with pytest.raises(Unauthenticated):
        tokens.check(f"Bearer {SEARCH}")
    path.write_bytes(b"{broken")
    assert tokens.check(f"Bearer {OPS}").name == "new", "kept: the new file does not parse"


def test_bearer_token_strips_the_scheme_and_spaces() -> None:
    assert bearer_token(f"  Bearer   {SEARCH}  ") == SEARCH


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.5", False),
        ("gateway.example", False),
    ],
)
def test_loopback_addresses(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_authentication_is_off_by_default_only_on_loopback(tmp_path: Path) -> None:
    assert isinstance(access_for(Settings(), "127.0.0.1"), OpenAccess)
    with pytest.raises(GatewayConfigError, match="KINFER_GATEWAY_TOKENS_FILE"):
        access_for(Settings(), "0.0.0.0")
    allowed = Settings(gateway_allow_unauthenticated=True)
    assert isinstance(access_for(allowed, "0.0.0.0"), OpenAccess)
    path = token_file(tmp_path, [{"name": "a", "token": SEARCH, "models": ["*"]}])
    with_tokens = Settings(gateway_tokens_file=str(path))
    assert isinstance(access_for(with_tokens, "0.0.0.0"), TokenFile)
    assert isinstance(access_for(with_tokens, "127.0.0.1"), TokenFile), "tokens apply everywhere"


def test_kinfer_gateway_refuses_a_public_address_without_tokens_and_a_bad_token_file(
    tmp_path: Path,
) -> None:
    from click.testing import CliRunner

    from streams.cli import main

    runner = CliRunner()
    public = runner.invoke(main, ["gateway", "--host", "0.0.0.0"], env={})
    assert public.exit_code == 1
    assert "refusing to serve on 0.0.0.0 without authentication" in public.output
    bad = tmp_path / "tokens.json"
    bad.write_text('{"tokens": [{"name": "a", "token": "short", "models": ["*"]}]}')
    broken = runner.invoke(main, ["gateway"], env={"KINFER_GATEWAY_TOKENS_FILE": str(bad)})
    assert broken.exit_code == 1
    assert "a token has at least 16 characters" in broken.output
