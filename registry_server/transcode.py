"""HTTP/JSON ⇄ protobuf, by the google.api.http annotations of the service (read once from its
descriptors: there is no second route table). A route's path template binds fields of the request
(`{name}`, `{model.name}`, `{path=**}`, custom verbs such as `:archive`); `body: "*"` fills the rest
from the JSON body, `body: "field"` that one field; every other field comes from query parameters
(camelCase or snake_case, repeated by repeating them, enums by name, a FieldMask as `a,b`). JSON is
protobuf's canonical mapping, unknown fields refused."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote

from google.api import annotations_pb2, http_pb2  # type: ignore[attr-defined]  # googleapis-common-protos ships no stubs for these
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor, MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

from . import errors
from .errors import invalid

# A message descriptor as the generated code hands it out: pure Python or upb (the C one), same interface.
AnyDescriptor = Any
_VERBS = ("get", "put", "post", "delete", "patch")
# A path's variables match percent-encoded segments: a `/` inside a value is sent as %2F.
_SEGMENT = "[^/]+"


@dataclass(frozen=True)
class Route:
    """One binding of an RPC: method, template and body, with the template compiled."""

    rpc: str
    method: str  # GET, POST...
    template: str
    body: str  # "", "*" or a field name
    pattern: re.Pattern[str]
    variables: dict[str, str]  # regex group -> field path (dotted)
    request: type[Message]
    method_descriptor: MethodDescriptor = field(compare=False)

    def match(self, path: str) -> dict[str, str] | None:
        """The field values the path binds, decoded, or None when it does not match."""
        found = self.pattern.fullmatch(path)
        if found is None:
            return None
        values = {}
        for group, field_path in self.variables.items():
            raw = found.group(group)
            values[field_path] = "/".join(unquote(part, errors="strict") for part in raw.split("/"))
        return values


def _compile(template: str) -> tuple[re.Pattern[str], dict[str, str]]:
    """The regex of a path template (google/api/http.proto's grammar) and its variables."""
    variables: dict[str, str] = {}
    out = []
    i = 0
    while i < len(template):
        char = template[i]
        if char == "{":
            end = template.index("}", i)
            name, _, sub = template[i + 1 : end].partition("=")
            group = f"v{len(variables)}"
            variables[group] = name
            out.append(f"(?P<{group}>{_segments(sub or '*')})")
            i = end + 1
        elif char == "*":
            double = template.startswith("**", i)
            out.append(".+" if double else _SEGMENT)
            i += 2 if double else 1
        else:
            out.append(re.escape(char))
            i += 1
    return re.compile("".join(out)), variables


def _segments(sub: str) -> str:
    return "/".join(".+" if part == "**" else _SEGMENT if part == "*" else re.escape(part) for part in sub.split("/"))


def _bindings(rule: http_pb2.HttpRule) -> list[tuple[str, str, str]]:
    found = []
    for rule_ in (rule, *rule.additional_bindings):
        kind = rule_.WhichOneof("pattern")
        if kind in _VERBS:
            found.append((kind.upper(), getattr(rule_, kind), rule_.body))
        elif kind == "custom":
            found.append((rule_.custom.kind.upper(), rule_.custom.path, rule_.body))
    return found


def routes(service: ServiceDescriptor) -> list[Route]:
    """Every binding of every RPC of the service; TypeError when an RPC has none. Templates with a
    custom verb come first, so that `/models/x:archive` is the verb, not a model named `x:archive`."""
    found = []
    for method in service.methods:
        options = method.GetOptions()
        if not options.HasExtension(annotations_pb2.http):
            raise TypeError(f"{method.full_name} declares no (google.api.http) option")
        for verb, template, body in _bindings(options.Extensions[annotations_pb2.http]):
            pattern, variables = _compile(template)
            found.append(Route(method.name, verb, template, body, pattern, variables, GetMessageClass(method.input_type), method))
    return sorted(found, key=lambda r: ":" not in r.template.rsplit("/", 1)[-1])


def _json_name(descriptor: AnyDescriptor, name: str) -> FieldDescriptor | None:
    """A field by its proto name or its JSON (camelCase) name."""
    found = descriptor.fields_by_name.get(name)
    if found is None:
        found = next((f for f in descriptor.fields if f.json_name == name), None)
    return found


def _query_value(field_: FieldDescriptor, value: str) -> Any:
    """A query parameter's text as the JSON value json_format takes for the field."""
    if field_.type == FieldDescriptor.TYPE_BOOL:
        lowered = value.lower()
        if lowered in ("true", "1", ""):
            return True
        if lowered in ("false", "0"):
            return False
        raise invalid("MALFORMED_REQUEST", f"{field_.json_name} takes true or false, not {value[:64]!r}", field=field_.name)
    if field_.message_type is not None and field_.message_type.full_name in (
        "google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue"
    ):
        try:
            return json.loads(value)
        except ValueError:
            raise invalid("MALFORMED_REQUEST", f"{field_.json_name} takes JSON", field=field_.name) from None
    return value


def _set(tree: dict[str, Any], descriptor: AnyDescriptor, path: str, values: list[str], source: str) -> None:
    """Places the values of a dotted field path into `tree`, the request as a JSON object."""
    parts = path.split(".")
    for part in parts[:-1]:
        field_ = _json_name(descriptor, part)
        if field_ is None or field_.message_type is None or field_.is_repeated:
            raise invalid("MALFORMED_REQUEST", f"unknown {source} {path!r}", parameter=path[:128])
        node = tree.setdefault(field_.json_name, {})
        if not isinstance(node, dict):
            raise invalid("MALFORMED_REQUEST", f"{source} {path!r} conflicts with the body", parameter=path[:128])
        tree, descriptor = node, field_.message_type
    field_ = _json_name(descriptor, parts[-1])
    if field_ is None:
        raise invalid("MALFORMED_REQUEST", f"unknown {source} {path!r}", parameter=path[:128])
    if field_.message_type is not None and field_.message_type.GetOptions().map_entry:
        raise invalid("MALFORMED_REQUEST", f"{path!r} cannot be given as a {source}", parameter=path[:128])
    if field_.json_name in tree or field_.name in tree:
        raise invalid("MALFORMED_REQUEST", f"{field_.json_name} is given twice", field=field_.name)
    if field_.is_repeated:
        tree[field_.json_name] = [_query_value(field_, v) for v in values]
    elif len(values) > 1:
        raise invalid("MALFORMED_REQUEST", f"{field_.json_name} takes one value", field=field_.name)
    else:
        tree[field_.json_name] = _query_value(field_, values[0])


def parse_query(query_string: bytes) -> dict[str, list[str]]:
    """Query parameters by name, in order; MALFORMED_REQUEST for bytes that are not UTF-8."""
    params: dict[str, list[str]] = {}
    try:
        pairs = parse_qsl(query_string.decode("ascii"), keep_blank_values=True, errors="strict", max_num_fields=1000)
    except (UnicodeDecodeError, ValueError) as error:
        raise invalid("MALFORMED_REQUEST", f"the query string is not valid: {str(error)[:200]}") from None
    for name, value in pairs:
        params.setdefault(name, []).append(value)
    return params


def request(route: Route, bound: dict[str, str], params: dict[str, list[str]], body: bytes) -> Message:
    """The request message of an HTTP call: the body per the route, then the path's fields, then the
    query's. MALFORMED_REQUEST (INVALID_ARGUMENT) with what is wrong for anything that does not parse."""
    descriptor = route.request.DESCRIPTOR
    tree: dict[str, Any] = {}
    if route.body:
        document: Any = {}
        if body.strip():
            try:
                document = json.loads(body.decode("utf-8"))
            except UnicodeDecodeError:
                raise invalid("MALFORMED_REQUEST", "the body is not UTF-8") from None
            except (ValueError, RecursionError) as error:
                raise invalid("MALFORMED_REQUEST", f"the body is not JSON: {str(error)[:200]}") from None
        if route.body == "*":
            if not isinstance(document, dict):
                raise invalid("MALFORMED_REQUEST", "the body must be a JSON object")
            tree = document
        else:
            body_field = _json_name(descriptor, route.body)
            assert body_field is not None, route.body
            tree = {body_field.json_name: document}
    elif body.strip():
        raise invalid("MALFORMED_REQUEST", f"{route.method} {route.template} takes no body")
    for path, value in bound.items():
        _drop(tree, descriptor, path)
        _set(tree, descriptor, path, [value], "path field")
    if params and route.body == "*":
        raise invalid("MALFORMED_REQUEST", "this call takes its fields in the JSON body, not the query", parameter=next(iter(params))[:128])
    for name, values in params.items():
        if name in bound or name.replace("_", "") in {b.replace("_", "").lower() for b in bound}:
            raise invalid("MALFORMED_REQUEST", f"{name!r} is given by the path", parameter=name[:128])
        _set(tree, descriptor, name, values, "query parameter")
    message = route.request()
    try:
        json_format.ParseDict(tree, message, ignore_unknown_fields=False, max_recursion_depth=64)
    except errors.RegistryError:
        raise
    except (json_format.ParseError, ValueError, TypeError, AttributeError, RecursionError) as error:
        raise invalid("MALFORMED_REQUEST", f"the request does not parse: {str(error)[:300]}") from None
    return message


def _drop(tree: dict[str, Any], descriptor: AnyDescriptor, path: str) -> None:
    """Removes a path-bound field from the body: the path wins."""
    parts = path.split(".")
    for part in parts[:-1]:
        field_ = _json_name(descriptor, part)
        node = tree.get(field_.json_name) if field_ is not None else None
        if field_ is None or not isinstance(node, dict) or field_.message_type is None:
            return
        tree, descriptor = node, field_.message_type
    field_ = _json_name(descriptor, parts[-1])
    if field_ is not None:
        tree.pop(field_.json_name, None)
        tree.pop(field_.name, None)


def to_json(message: Message) -> bytes:
    """Proto3 JSON (camelCase names, defaults omitted): what `buf curl` prints for the message."""
    return json.dumps(json_format.MessageToDict(message), ensure_ascii=False, separators=(",", ":")).encode()
