"""Tokens out of URLs and log lines: the URL split, redaction, the token file."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import NamedTuple

import pytest

from gateway.wire.tokens import Secret
from gateway.wire.tokens import TokenError
from gateway.wire.tokens import bearer_headers
from gateway.wire.tokens import read_token_file
from gateway.wire.tokens import redact
from gateway.wire.tokens import redacted_repr
from gateway.wire.tokens import split_token

SECRET = "s3cret-token-0123456789"


@pytest.mark.parametrize(
    ("url", "clean", "token"),
    [
        (f"ws://127.0.0.1:8765/?token={SECRET}", "ws://127.0.0.1:8765/", SECRET),
        (f"ws://h/?a=1&token={SECRET}&b=2", "ws://h/?a=1&b=2", SECRET),
        (f"ws://h/?token={SECRET}#frag", "ws://h/#frag", SECRET),
        (f"unix:/run/gw.sock?token={SECRET}", "unix:/run/gw.sock", SECRET),
        ("ws://h/?token=a%2Bb+c&token=second", "ws://h/", "a+b c"),  # as the server decodes
        ("ws://h/?tokens=x&token", "ws://h/?tokens=x&token", None),  # no token= parameter
        ("ws://h/", "ws://h/", None),
    ],
)
def test_a_token_is_taken_out_of_a_url(url: str, clean: str, token: str | None) -> None:
    assert split_token(url) == (clean, token)


@pytest.mark.parametrize(
    ("text", "redacted"),
    [
        (f"GET /?token={SECRET} HTTP/1.1", "GET /?token=*** HTTP/1.1"),
        (f"ws://h/?a=1&TOKEN={SECRET}&b=2", "ws://h/?a=1&TOKEN=***&b=2"),
        (f"'/x?token={SECRET}'", "'/x?token=***'"),
        (f"> Authorization: Bearer {SECRET}", "> Authorization: Bearer ***"),
        (f"{{'Authorization': 'bearer {SECRET}'}}", "{'Authorization': 'bearer ***'}"),
        (f"< authorization: Basic {SECRET}", "< authorization: ***"),
        (f"wss://alice:{SECRET}@gw:8765/x", "wss://alice:***@gw:8765/x"),
        (f"'http://:{SECRET}@gw'", "'http://:***@gw'"),
        (f"ws://a:{SECRET}@h/?token={SECRET}", "ws://a:***@h/?token=***"),
        (
            "ws://h:8765/, ws://alice@h/, ws://[::1]:80/",
            "ws://h:8765/, ws://alice@h/, ws://[::1]:80/",
        ),
        ("no secret here: token bucket, /healthz", "no secret here: token bucket, /healthz"),
    ],
)
def test_redaction_hides_every_token_value(text: str, redacted: str) -> None:
    assert redact(text) == redacted
    assert SECRET not in redact(text)


def test_a_token_is_sent_as_a_bearer_header() -> None:
    assert bearer_headers(SECRET) == {"Authorization": f"Bearer {SECRET}"}
    assert bearer_headers(None) == {}


def test_a_token_file_is_read_by_its_first_line(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text(f"  {SECRET}\t\nsecond line\n")
    assert read_token_file(path) == SECRET
    path.write_text("\n" + SECRET)
    with pytest.raises(TokenError, match="first line is empty"):
        read_token_file(path)
    path.write_text("")
    with pytest.raises(TokenError, match="first line is empty"):
        read_token_file(path)
    with pytest.raises(TokenError, match=r"cannot read .*missing: No such file"):
        read_token_file(tmp_path / "missing")
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(TokenError, match="not UTF-8"):
        read_token_file(path)


@redacted_repr
@dataclasses.dataclass(frozen=True)
class _Endpoint:
    url: str
    token: str | None = None


@redacted_repr
class _Target(NamedTuple):
    url: str
    retries: int


def test_a_redacted_repr_shows_no_url_password_or_token_value() -> None:
    endpoint = _Endpoint("wss://desk:hunter2@host/ws?token=abc", Secret("s3cret"))
    target = _Target("https://desk:hunter2@host/", 3)
    for shown in (repr(endpoint), str(endpoint), repr([endpoint]), f"{target}", repr(target)):
        assert "hunter2" not in shown and "abc" not in shown and "s3cret" not in shown, shown
    assert repr(endpoint) == "_Endpoint(url='wss://desk:***@host/ws?token=***', token='***')"
    assert repr(target) == "_Target(url='https://desk:***@host/', retries=3)"
    # Only the repr: the fields are the values given.
    assert endpoint.url == "wss://desk:hunter2@host/ws?token=abc" and target.retries == 3
