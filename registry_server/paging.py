"""Keyset paging: one page of rows (the database pages, never Python), and opaque page tokens that
name the position after a row, bound to the query that made them and signed with the database's key.

A token is `base64url(JSON payload) "." base64url(HMAC-SHA256(key, payload))`: a token that is not one
this registry handed out (forged, edited, of another database, truncated, or holding anything at
all) fails the signature check before its payload is even parsed, and is INVALID_PAGE_TOKEN."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

import peewee as pw

from .errors import invalid

T = TypeVar("T")

MAX_TOKEN_LENGTH = 2048
_MAC_BYTES = 16


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _fingerprint(query: Any) -> str:
    return hashlib.sha256(json.dumps(query, sort_keys=True).encode()).hexdigest()[:16]


def _refused() -> Exception:
    return invalid("INVALID_PAGE_TOKEN", "page_token is not one this registry handed out")


class PageTokens:
    """Makes and reads the page tokens of one database, signed with its key."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()[:_MAC_BYTES]

    def encode(self, query: Any, after: list[Any]) -> str:
        """A token naming the position after `after` in the results of `query`."""
        payload = json.dumps({"q": _fingerprint(query), "a": after}, separators=(",", ":")).encode()
        return f"{_b64(payload)}.{_b64(self._mac(payload))}"

    def decode(self, token: str, query: Any, types: Sequence[type | tuple[type, ...]]) -> list[Any] | None:
        """The position a token names, or None for the first page; refuses tokens of another query
        (PAGE_TOKEN_MISMATCH) and every token this registry did not make (INVALID_PAGE_TOKEN).

        `types` gives the type of each value of the position, checked even so."""
        if not token:
            return None
        if len(token) > MAX_TOKEN_LENGTH or token.count(".") != 1:
            raise _refused()
        encoded_payload, encoded_mac = token.split(".")
        try:
            payload, mac = _unb64(encoded_payload), _unb64(encoded_mac)
        except (binascii.Error, ValueError):
            raise _refused() from None
        if not hmac.compare_digest(mac, self._mac(payload)):
            raise _refused()
        try:
            decoded = json.loads(payload)
            fingerprint, after = decoded["q"], decoded["a"]
        except (ValueError, KeyError, TypeError):
            raise _refused() from None
        if fingerprint != _fingerprint(query):
            raise invalid(
                "PAGE_TOKEN_MISMATCH", "page_token was made for a list with other filters or sort; start again without it"
            )
        if not isinstance(after, list) or len(after) != len(types):
            raise _refused()
        for value, kind in zip(after, types, strict=True):
            if isinstance(value, bool) or not isinstance(value, kind):
                raise _refused()
            if isinstance(value, int) and not -(2**63) <= value < 2**63:
                raise _refused()
        return after


class Page(Generic[T]):
    """One page of rows, the count over all pages, and tokens to go on after any row of it."""

    def __init__(
        self,
        rows: Sequence[T],
        total_size: int,
        more: bool = False,
        token_at: Callable[[int], str] | None = None,
    ) -> None:
        self.rows = rows
        self.total_size = total_size
        self.more = more  # rows follow the last one
        self._token_at = token_at

    def token_after(self, index: int) -> str:
        """The token of the page that starts after rows[index]; empty after the last row of all."""
        if self._token_at is None or (index == len(self.rows) - 1 and not self.more):
            return ""
        return self._token_at(index)

    @property
    def next_page_token(self) -> str:
        return self.token_after(len(self.rows) - 1) if self.rows else ""


def fetch(
    query: pw.ModelSelect[Any],
    size: int,
    total_size: int | Callable[[], int],
    tokens: PageTokens,
    fingerprint: Any,
    position: Callable[[Any], list[Any]],
    read: Callable[[Sequence[Any]], T] | None = None,
) -> Page[Any]:
    """Runs `query` (filtered, ordered and positioned by the caller) for one page of `size` rows: it
    reads one more to know whether more follow. With `read`, the query's raw tuples are read into
    rows by it (rows.py), and `position` gets the raw tuple; otherwise rows are peewee instances."""
    if read is None:
        raw: list[Any] = list(query.limit(size + 1))
    else:  # the cursor's own tuples: no peewee converters, `read` decodes what needs it
        raw = _fetchall(query.model._meta.database.execute(query.limit(size + 1)))
    return page_of(raw, size, total_size, tokens, fingerprint, position, read)


def page_of(
    raw: list[Any],
    size: int,
    total_size: int | Callable[[], int],
    tokens: PageTokens,
    fingerprint: Any,
    position: Callable[[Any], list[Any]],
    read: Callable[[Sequence[Any]], T] | None = None,
) -> Page[Any]:
    """The page of `raw`, the rows of a query run for `size` + 1 rows (see fetch)."""
    more = len(raw) > size
    raw = raw[:size]
    return Page(
        [read(r) for r in raw] if read is not None else raw,
        total_size() if callable(total_size) else total_size,
        more,
        lambda index: tokens.encode(fingerprint, position(raw[index])),
    )


def _fetchall(cursor: Any) -> list[Any]:
    try:
        return list(cursor.fetchall())
    finally:
        cursor.close()
