"""Subscriber tokens (``server.token``) and URL passwords: out of URLs, out of log lines.

A token travels as ``Authorization: Bearer TOKEN`` (:func:`bearer_headers`); a URL that
still carries one as ``?token=TOKEN`` has it taken out before it is used or shown
(:func:`split_token`). Text that may hold a token (a request line, a header, a URL) is
written through :func:`redact`, which also hides the password of a URL's
``user:password@`` (the user is kept). A token kept in a file is read by :func:`read_token_file`:
its first line, stripped, so that it stays off command lines (``ps``) and out of the
configuration file. A token kept in a structure is a :class:`Secret`, whose ``repr`` hides it;
a structure that keeps URLs shows them redacted (:func:`redacted_repr`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Final
from typing import TypeVar
from typing import cast
from urllib.parse import unquote_plus

#: The query parameter a URL may carry the token in (the server accepts it there too).
TOKEN_PARAMETER: Final = "token"
_Class = TypeVar("_Class", bound=type)

#: What a redacted secret is shown as.
REDACTED: Final = "***"

#: A secret in text, and what precedes it (kept): a ``token=`` value (up to ``&``, a space,
#: ``#`` or a quote), a ``Bearer`` credential, an ``Authorization`` header's value (to the
#: end of the line or a quote), the password of a URL's ``user:password@`` (its scheme and
#: user kept; userinfo holds no ``/``, ``?``, ``#`` or unescaped ``@``).
_SECRET: Final = re.compile(
    r"(?i)(token=)[^&\s#'\"]+"
    r"|(bearer\s+)[^\s'\"]+"
    r"|(authorization['\"]?+\s*+[:=]\s*+['\"]?+)(?!bearer\s)[^'\"\r\n]+"
    r"|(\b[a-z][a-z0-9+.-]*+://[^/?#@\s:'\"]*+:)[^/?#@\s'\"]++(?=@)"
)
#: A secret of a URL in text: a ``token`` query parameter's value, a ``user:password@``'s
#: password (as in :data:`_SECRET`). Not a bare ``token=``: a ``repr`` writes fields so.
_URL_SECRET: Final = re.compile(
    r"(?i)([?&]token=)[^&\s#'\"]+"
    r"|(\b[a-z][a-z0-9+.-]*+://[^/?#@\s:'\"]*+:)[^/?#@\s'\"]++(?=@)"
)


class Secret(str):
    """A secret string (a token) that its ``repr`` does not show: ``'***'``, so that a
    structure holding it (a configuration, a log line of one) shows no secret. Otherwise
    the string itself (``str()``, comparisons, ``encode()``). msgspec does not encode it
    (a configuration is not written out with its secret)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return repr(REDACTED)


class TokenError(ValueError):
    """A token cannot be read; the message says why (never the token)."""


def redact(text: str) -> str:
    """``text`` with every token value, bearer credential, ``Authorization`` header value
    and URL password replaced by ``***`` (``/?token=***``, ``Authorization: Bearer ***``,
    ``wss://user:***@host/``)."""
    return _SECRET.sub(_redacted, text)


def _redacted(match: re.Match[str]) -> str:
    kept = next(group for group in match.groups() if group is not None)
    return kept + REDACTED


def redacted_repr(cls: _Class) -> _Class:
    """Class decorator: ``cls``'s ``repr`` (and so its ``str``, which falls back on it) is
    the one it had with the URLs in it shown as :func:`redact` shows them: no password,
    no ``token`` query value. A token held as a field of its own is no URL: hold it as a
    :class:`Secret`. Put it above ``@dataclass``, whose ``repr`` it wraps."""
    # The class's own repr, taken unbound (typed as the metaclass's, bound to the class).
    shown = cast("Callable[[object], str]", cls.__repr__)

    def __repr__(self: object) -> str:
        return _URL_SECRET.sub(_redacted, shown(self))

    setattr(cls, "__repr__", __repr__)  # noqa: B010 (mypy refuses assigning to a method)
    return cls


def split_token(url: str) -> tuple[str, str | None]:
    """``url`` without its ``token`` query parameters (every one; the ``?`` too when
    nothing else is left), and the first one's value (decoded as the server decodes it),
    or None when it carries none. Any URL form: ``ws://host/?token=T&x=1``,
    ``unix:/path.sock?token=T``."""
    head, mark, rest = url.partition("?")
    if not mark:
        return url, None
    query, hash_mark, fragment = rest.partition("#")
    token: str | None = None
    kept: list[str] = []
    for item in query.split("&"):
        name, equals, value = item.partition("=")
        if equals and unquote_plus(name) == TOKEN_PARAMETER:
            if token is None:
                token = unquote_plus(value)
            continue
        kept.append(item)
    if token is None:
        return url, None
    remaining = "&".join(kept)
    return f"{head}{'?' if remaining else ''}{remaining}{hash_mark}{fragment}", token


def bearer_headers(token: str | None) -> dict[str, str]:
    """The HTTP headers that present ``token`` (none without one)."""
    return {} if token is None else {"Authorization": f"Bearer {token}"}


def read_token_file(path: Path) -> str:
    """The token in the file at ``path``: its first line, stripped. Raises
    :class:`TokenError` when the file cannot be read or that line is empty."""
    try:
        with path.open(encoding="utf-8") as file:
            first = file.readline()
    except OSError as exc:
        raise TokenError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise TokenError(f"{path} is not UTF-8 text") from None
    token = first.strip()
    if not token:
        raise TokenError(f"{path}: the first line is empty (expected the token)")
    return token
