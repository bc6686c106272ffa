"""Opaque page tokens for keyset paging: the last row's sort key, bound to the query that made it."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any, Generic, Sequence, TypeVar

from .errors import invalid

T = TypeVar("T")

MAX_TOKEN_LENGTH = 2048


class Page(Generic[T]):
    """One page of rows, the token of the next page ("" on the last) and the count over all pages."""

    def __init__(self, rows: Sequence[T], next_page_token: str, total_size: int) -> None:
        self.rows = rows
        self.next_page_token = next_page_token
        self.total_size = total_size


def _fingerprint(query: Any) -> str:
    return hashlib.sha256(json.dumps(query, sort_keys=True).encode()).hexdigest()[:16]


def encode(query: Any, after: list[Any]) -> str:
    """A token naming the position after `after` in the results of `query`."""
    payload = json.dumps({"q": _fingerprint(query), "a": after}, separators=(",", ":"))
    return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


def decode(token: str, query: Any, types: Sequence[type | tuple[type, ...]]) -> list[Any] | None:
    """The position a token names, or None for the first page; refuses tokens of another query.

    `types` gives the type of each value of the position: a forged token must not reach the SQL.
    """
    if not token:
        return None
    try:
        if len(token) > MAX_TOKEN_LENGTH:
            raise ValueError("too long")
        payload = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        after = payload["a"]
        if payload["q"] != _fingerprint(query):
            raise invalid(
                "PAGE_TOKEN_MISMATCH",
                "page_token was made for a list with other filters or sort; start again without it",
            )
        if not isinstance(after, list) or len(after) != len(types):
            raise ValueError("malformed")
        for value, kind in zip(after, types):
            if isinstance(value, bool) or not isinstance(value, kind):
                raise ValueError("malformed")
            if isinstance(value, int) and not -(2**63) <= value < 2**63:
                raise ValueError("out of range")
        return after
    except (ValueError, KeyError, TypeError) as error:
        raise invalid("INVALID_PAGE_TOKEN", "page_token is not one this registry handed out") from error
