"""Limits on what a request may carry, and the checks that enforce them before anything is written."""

from __future__ import annotations

import functools
import json
import re
import unicodedata
from collections.abc import Iterable
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from . import contract
from .errors import invalid

MAX_NAME_LENGTH = 256
MAX_LABEL_LENGTH = 128
MAX_LABELS = 64
MAX_TEXT_LENGTH = 4096  # description, comment, version name, framework, format, storage_uri
MAX_NOTES_BYTES = 64 * 1024
MAX_METADATA_BYTES = 64 * 1024  # model and version metadata, as compact JSON
MAX_CHECKPOINT_JSON_BYTES = 256 * 1024  # each of experiment_config, hparams, metrics, metadata
# Objects and arrays nested in one JSON value, the value itself counting 1. An answer embeds a value
# several messages deep, and each level of JSON costs up to three protobuf messages (Struct, its map
# entry, Value): 20 levels stay well within protobuf's limit of 100 for every answer that holds one.
MAX_JSON_DEPTH = 20
MAX_RESOURCES = 10_000  # entries of a checkpoint's resources: the files it may store
# Total UTF-8 bytes of the paths in a checkpoint's resources. With the ~16 bytes each map entry adds
# on the wire, 10,000 entries stay under 1 MiB, so a Checkpoint (four JSON fields of 256 KiB each)
# and a ModelVersion embedding it stay well under the 4 MiB message limit.
MAX_RESOURCE_PATH_BYTES = 768 * 1024
MAX_METADATA_KEYS_TO_REMOVE = 1000
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_ALIAS_LENGTH = 128
# Aliases of one model: every version's answer lists the aliases pointing at it, so they stay readable.
MAX_ALIASES_PER_MODEL = 1000
MAX_REQUEST_ID_LENGTH = 128
_ALIAS = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


# Categories refused anywhere in a name: controls (C0 and C1), format characters (bidi overrides,
# zero-width joiners...), surrogates, private use, unassigned code points, line and paragraph separators.
_NAME_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
# Letters of these scripts look alike; one name mixing Latin with either is a likely spoof.
_LOOKALIKE_SCRIPTS = ("CYRILLIC", "GREEK")


def name(value: str, field: str = "name") -> str:
    """Model names, as stored: in Unicode NFC; 1 to 256 characters, no slash or backslash, not all
    digits, no leading or trailing whitespace, no control, format or separator characters, and no
    Latin letters beside Cyrillic or Greek ones."""
    value = unicodedata.normalize("NFC", value)
    if not value:
        raise invalid("INVALID_NAME", f"{field} must not be empty", field=field)
    if len(value) > MAX_NAME_LENGTH:
        raise invalid(
            "INVALID_NAME",
            f"{field} is longer than {MAX_NAME_LENGTH} characters",
            field=field,
            length=len(value),
            limit=MAX_NAME_LENGTH,
        )
    problem = None
    if "/" in value or "\\" in value:
        problem = "must not contain '/' or '\\'"
    elif value.isdigit():
        problem = "must not be all digits"
    elif value != value.strip():
        problem = "must not start or end with whitespace"
    elif any(unicodedata.category(c) in _NAME_REFUSED_CATEGORIES for c in value):
        problem = "must not contain control, format, separator or unassigned characters"
    elif _mixes_lookalike_scripts(value):
        problem = "must not mix Latin letters with Cyrillic or Greek ones"
    if problem:
        raise invalid("INVALID_NAME", f"{field} {problem}", field=field, value=_printable(value[:MAX_NAME_LENGTH]))
    return value


def name_key(value: str) -> str:
    """A name as names are compared: NFC, case-folded. Two models never share one."""
    return unicodedata.normalize("NFC", value).casefold()


def _mixes_lookalike_scripts(value: str) -> bool:
    scripts = {unicodedata.name(c, "").split(" ", 1)[0] for c in value if c.isalpha()}
    return "LATIN" in scripts and any(script in scripts for script in _LOOKALIKE_SCRIPTS)


def _printable(value: str) -> str:
    """A refused value as it may be echoed in an error: characters that could rewrite a terminal or
    reorder text are escaped."""
    return "".join(
        c if unicodedata.category(c) not in _NAME_REFUSED_CATEGORIES else f"\\u{ord(c):04x}" for c in value
    )


def text(value: str, field: str, limit: int = MAX_TEXT_LENGTH) -> str:
    """Free text: at most `limit` characters (UTF-8 bytes for notes), no NUL (PostgreSQL refuses it)."""
    size = len(value.encode()) if field == "notes" else len(value)
    if size > limit:
        raise invalid(
            "VALUE_TOO_LONG", f"{field} is longer than {limit}", field=field, length=size, limit=limit
        )
    if "\x00" in value:
        raise invalid("INVALID_CHARACTER", f"{field} must not contain NUL characters", field=field)
    return value


def notes(value: str) -> str:
    return text(value, "notes", MAX_NOTES_BYTES)


def labels(values: Iterable[str], field: str = "labels") -> list[str]:
    """Labels keep their order and lose duplicates; each is 1 to 128 printable characters."""
    result: list[str] = []
    for label in values:
        if not label or len(label) > MAX_LABEL_LENGTH or _CONTROL.search(label) or label != label.strip():
            raise invalid(
                "INVALID_LABEL",
                f"each label must be 1 to {MAX_LABEL_LENGTH} printable characters without "
                "leading or trailing whitespace",
                field=field,
                value=label[:MAX_LABEL_LENGTH],
            )
        if label not in result:
            result.append(label)
    if len(result) > MAX_LABELS:
        raise invalid(
            "TOO_MANY_LABELS", f"at most {MAX_LABELS} labels", field=field, count=len(result), limit=MAX_LABELS
        )
    return result


def principals(values: Iterable[str], field: str) -> list[str]:
    """Principal names (e.g. a model's editors): 1 to 256 printable characters each, duplicates
    dropped, order kept, at most 64."""
    result: list[str] = []
    for value in values:
        if not value or len(value) > MAX_NAME_LENGTH or _CONTROL.search(value) or value != value.strip():
            raise invalid(
                "INVALID_PRINCIPAL", f"each of {field} is 1 to {MAX_NAME_LENGTH} printable characters", field=field
            )
        if value not in result:
            result.append(value)
    if len(result) > MAX_LABELS:
        raise invalid(f"TOO_MANY_{field.upper()}", f"at most {MAX_LABELS} {field}", field=field, limit=MAX_LABELS)
    return result


def json_object(value: dict[str, Any], field: str, limit: int = MAX_METADATA_BYTES) -> dict[str, Any]:
    """A JSON object no larger than `limit` bytes of compact JSON, with no NUL anywhere."""
    if not isinstance(value, dict):  # a Struct always is; a backup's row need not be
        raise invalid("INVALID_JSON", f"{field} must be a JSON object", field=field)
    try:
        encoded = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except ValueError:
        raise invalid("INVALID_JSON", f"{field} must not hold NaN or infinite numbers", field=field) from None
    size = len(encoded.encode())
    if size > limit:
        raise invalid("VALUE_TOO_LARGE", f"{field} is larger than {limit} bytes", field=field, size=size, limit=limit)
    if _depth(value) > MAX_JSON_DEPTH:
        raise invalid(
            "JSON_TOO_DEEP", f"{field} nests objects and arrays more than {MAX_JSON_DEPTH} deep", field=field,
            limit=MAX_JSON_DEPTH,
        )
    # json.dumps escapes NUL as \u0000, which PostgreSQL's jsonb refuses.
    if "\\u0000" in encoded:
        raise invalid("INVALID_CHARACTER", f"{field} must not contain NUL characters", field=field)
    return value


def _depth(value: Any) -> int:
    """How deep objects and arrays nest in a JSON value (a scalar: 0), without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is not None:
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in children)
    return deepest


def metadata_keys(keys: Iterable[str]) -> list[str]:
    result = list(keys)
    if len(result) > MAX_METADATA_KEYS_TO_REMOVE:
        raise invalid(
            "TOO_MANY_REMOVE_KEYS", f"at most {MAX_METADATA_KEYS_TO_REMOVE} keys", count=len(result)
        )
    for key in result:
        text(key, "remove_keys", MAX_NAME_LENGTH)
    return result


def resource_budget(count: int, path_bytes: int) -> None:
    """A checkpoint's resources (given, or the files it stores) fit their caps: count and path bytes."""
    if count > MAX_RESOURCES:
        raise invalid(
            "TOO_MANY_RESOURCES", f"a checkpoint has at most {MAX_RESOURCES} resources (files)", count=count, limit=MAX_RESOURCES
        )
    if path_bytes > MAX_RESOURCE_PATH_BYTES:
        raise invalid(
            "RESOURCES_TOO_LARGE",
            f"the paths of a checkpoint's resources (files) total at most {MAX_RESOURCE_PATH_BYTES} bytes",
            size=path_bytes,
            limit=MAX_RESOURCE_PATH_BYTES,
        )


def resources(value: dict[str, int]) -> dict[str, int]:
    resource_budget(len(value), sum(len(path.encode()) for path in value))
    for path, size in value.items():
        text(path, "resources", MAX_TEXT_LENGTH)
        if not path or size < 0:
            raise invalid(
                "INVALID_RESOURCE", "resources map non-empty paths to sizes >= 0", path=path, size=size
            )
    return value


INT32_MAX = 2**31 - 1  # int32 fields of the protos (ids, version numbers, counters)
INT64_MAX = 2**63 - 1  # int64 fields (sizes, event sequence numbers)


def integer(value: int, field: str, low: int = 0, high: int = INT32_MAX) -> int:
    """An integer within what its field holds in the protos: what is stored can always be answered."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise invalid(
            "INVALID_ARGUMENT_VALUE", f"{field} must be an integer from {low} to {high}", field=field, value=str(value)[:32]
        )
    return value


def page_size(value: int) -> int:
    """0 means the default, larger than the maximum is lowered to it, negative is refused."""
    if value < 0:
        raise invalid("INVALID_PAGE_SIZE", "page_size must not be negative", page_size=value)
    return min(value or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def version(value: int, *, allow_latest: bool = False) -> int:
    if value < 0 or (value == 0 and not allow_latest):
        raise invalid("INVALID_VERSION", "version must be a positive number", version=value)
    return value


def alias(value: str) -> str:
    """Aliases: 1 to 128 letters, digits, ".", "_" or "-", starting with a letter or digit, and not all
    digits, so that an alias never reads as a version number."""
    if not (0 < len(value) <= MAX_ALIAS_LENGTH and _ALIAS.fullmatch(value)) or value.isdigit():
        raise invalid(
            "INVALID_ALIAS",
            f"an alias is 1 to {MAX_ALIAS_LENGTH} letters, digits, '.', '_' or '-', starting with a "
            "letter or digit, and not all digits",
            alias=value[:MAX_ALIAS_LENGTH],
        )
    return value


def request_id(value: str) -> str:
    """Empty (no idempotency), or 1 to 128 printable characters."""
    if len(value) > MAX_REQUEST_ID_LENGTH or _CONTROL.search(value) or value != value.strip():
        raise invalid(
            "INVALID_REQUEST_ID",
            f"request_id is at most {MAX_REQUEST_ID_LENGTH} printable characters, e.g. a UUID",
            request_id=value[:MAX_REQUEST_ID_LENGTH],
        )
    return value


MAX_FILE_PATH_BYTES = 1024
MAX_PATH_COMPONENT_BYTES = 255  # what common filesystems allow for one name
_NOT_ON_WINDOWS = re.compile(r'[<>:"|?*]')
# Device names Windows reserves in every directory, with any extension ("con.txt" too).
_WINDOWS_DEVICES = {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"} | {
    f"{port}{digit}" for port in ("COM", "LPT") for digit in "0123456789\u00b9\u00b2\u00b3"
}


def file_path(value: str, *, portable: bool = True) -> str:
    """A checkpoint file's path, confined to the checkpoint: relative, "/" between non-empty
    components, none of them "." or "..", no backslash (a separator elsewhere) or control character.
    `portable` (every path a file is stored under) also refuses what no Windows client can write: the
    characters < > : " | ? *, a component ending in "." or " " (Windows drops them), and device names
    such as CON, NUL, COM1 or LPT1 (with any extension). Lookups of stored files skip those checks,
    so files stored before they existed stay reachable."""
    problem = None
    components = value.split("/")
    if not value:
        problem = "must not be empty"
    elif len(value.encode()) > MAX_FILE_PATH_BYTES:
        problem = f"must be at most {MAX_FILE_PATH_BYTES} bytes"
    elif value.startswith("/"):
        problem = "must be relative to the checkpoint"
    elif "\\" in value or _CONTROL.search(value):
        problem = "must not contain backslashes or control characters"
    elif any(part in ("", ".", "..") for part in components):
        problem = "must not have empty, '.' or '..' components"
    elif any(len(part.encode()) > MAX_PATH_COMPONENT_BYTES or part != part.strip() for part in components):
        problem = f"must have components of at most {MAX_PATH_COMPONENT_BYTES} bytes without surrounding whitespace"
    elif portable and _NOT_ON_WINDOWS.search(value):
        problem = 'must not contain < > : " | ? * (no Windows client can write them)'
    elif portable and any(part.endswith(".") for part in components):
        problem = "must not have components ending in '.' (Windows drops the dot)"
    elif portable and any(part.split(".")[0].rstrip(" ").upper() in _WINDOWS_DEVICES for part in components):
        problem = "must not use a device name Windows reserves (CON, PRN, AUX, NUL, COM0-9, LPT0-9...) as a component"
    if problem:
        raise invalid("INVALID_FILE_PATH", f"file path {problem}", path=value[:MAX_FILE_PATH_BYTES])
    return value


# Strings that are never stored nor looked up as they are: a page token is checked by its signature.
_OPAQUE_STRINGS = frozenset({"page_token"})


def check_request(message: Message) -> None:
    """What every request is checked for before anything reads it: no string anywhere holds NUL (no
    stored value holds one, and PostgreSQL refuses it even in a lookup), and no repeated field holds
    more distinct values than its declared `max_items`. Costs what the request holds: only the fields
    that are set are visited."""
    _check_fields(message, "")


@functools.cache
def _field_kind(field: FieldDescriptor) -> tuple[bool, bool, int]:
    """(is a map, holds messages, declared cap) of a field."""
    is_map = field.message_type is not None and field.message_type.GetOptions().map_entry
    return is_map, field.type == FieldDescriptor.TYPE_MESSAGE, contract.max_items(field)


def _check_fields(message: Message, path: str) -> None:
    for field, value in message.ListFields():
        name = path + field.name
        is_map, holds_messages, cap = _field_kind(field)
        if cap and len(value) > cap and (is_map or holds_messages or len(set(value)) > cap):
            raise invalid(
                f"TOO_MANY_{field.name.upper()}",
                f"{name} holds more than {cap} distinct values",
                field=name,
                limit=cap,
                count=len(value),
            )
        if is_map:
            for key, item in value.items():
                _refuse_nul(name, key)
                if isinstance(item, Message):
                    _check_fields(item, f"{name}.")
                elif isinstance(item, str):
                    _refuse_nul(name, item)
        elif holds_messages:
            for item in value if field.is_repeated else (value,):
                _check_fields(item, f"{name}.")
        elif field.type == FieldDescriptor.TYPE_STRING and field.name not in _OPAQUE_STRINGS:
            for item in value if field.is_repeated else (value,):
                _refuse_nul(name, item)


def _refuse_nul(path: str, value: str) -> None:
    if "\x00" in value:
        raise invalid("INVALID_CHARACTER", f"{path} must not contain NUL characters", field=path)
