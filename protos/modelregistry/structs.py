"""JSON values and google.protobuf.Struct, by one rule for the server and the client alike.

A Struct holds every number as a double. Reading one back, an integral number below 2**53 (where a
double still holds every integer exactly) becomes an int again, so that {"epochs": 10} round-trips
as 10, not 10.0; anything else stays a float."""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format, struct_pb2

# Integers beyond this lose digits in a double, and so in a Struct.
MAX_EXACT_INTEGER = 2**53


def plain(value: Any) -> Any:
    """A JSON value read from a Struct, with its integral numbers as ints (see above)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < MAX_EXACT_INTEGER:
        return int(value)
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [plain(item) for item in value]
    return value


def to_dict(struct: struct_pb2.Struct) -> dict[str, Any]:
    """A Struct as a plain dict. ValueError when it holds NaN or an infinity (JSON has neither)."""
    result: dict[str, Any] = plain(json_format.MessageToDict(struct))
    return result
