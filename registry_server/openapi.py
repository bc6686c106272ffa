"""The OpenAPI 3.1 document of the HTTP API, generated from the same descriptors and google.api.http
annotations the gateway routes by, with the protos' comments as descriptions (read from the .proto
files shipped beside the stubs). `python -m registry_server.openapi` prints it."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from modelregistry.v1 import registry_service_pb2

from . import contract, transcode

_F = FieldDescriptor
_SCALARS: dict[int, dict[str, Any]] = {
    _F.TYPE_STRING: {"type": "string"},
    _F.TYPE_BOOL: {"type": "boolean"},
    _F.TYPE_BYTES: {"type": "string", "contentEncoding": "base64"},
    _F.TYPE_DOUBLE: {"type": "number"},
    _F.TYPE_FLOAT: {"type": "number"},
    _F.TYPE_INT32: {"type": "integer", "format": "int32"},
    _F.TYPE_SINT32: {"type": "integer", "format": "int32"},
    _F.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    _F.TYPE_UINT32: {"type": "integer", "format": "int64", "minimum": 0},
    _F.TYPE_FIXED32: {"type": "integer", "format": "int64", "minimum": 0},
    # proto3 JSON writes 64-bit integers as strings, and reads either.
    _F.TYPE_INT64: {"type": ["string", "integer"], "format": "int64"},
    _F.TYPE_SINT64: {"type": ["string", "integer"], "format": "int64"},
    _F.TYPE_SFIXED64: {"type": ["string", "integer"], "format": "int64"},
    _F.TYPE_UINT64: {"type": ["string", "integer"], "format": "int64"},
    _F.TYPE_FIXED64: {"type": ["string", "integer"], "format": "int64"},
}
_WELL_KNOWN: dict[str, dict[str, Any]] = {
    "google.protobuf.Struct": {"type": "object", "additionalProperties": True},
    "google.protobuf.Value": {},
    "google.protobuf.ListValue": {"type": "array", "items": {}},
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": "^-?[0-9]+(\\.[0-9]+)?s$"},
    "google.protobuf.FieldMask": {"type": "string", "description": "Field paths separated by commas, e.g. description,labels."},
    "google.protobuf.Any": {"type": "object", "properties": {"@type": {"type": "string"}}, "additionalProperties": True},
}
_STATUS = {
    "type": "object",
    "description": "google.rpc.Status: the gRPC code, a message, and an ErrorInfo whose reason (e.g. MODEL_NOT_FOUND) "
    "names what went wrong.",
    "properties": {
        "code": {"type": "integer", "format": "int32"},
        "message": {"type": "string"},
        "details": {"type": "array", "items": {"$ref": "#/components/schemas/google.protobuf.Any"}},
    },
}


def comments() -> dict[str, str]:
    """The leading comment of every service, rpc, message, enum, field and enum value in our .proto
    files, by full name (e.g. modelregistry.v1.Model.name)."""
    found: dict[str, str] = {}
    directory = Path(registry_service_pb2.__file__).parent
    for file in sorted(directory.glob("*.proto")):
        package, stack, pending = "", list[str](), list[str]()
        for raw in file.read_text().splitlines():
            line = raw.strip()
            if line.startswith("//"):
                pending.append(line[2:].strip())
                continue
            text = " ".join(pending)
            pending = []
            if match := re.match(r"package\s+([\w.]+);", line):
                package = match.group(1)
            elif match := re.match(r"(service|message|enum|oneof)\s+(\w+)\s*\{", line):
                if match.group(1) != "oneof":
                    name = ".".join([package, *stack, match.group(2)])
                    found[name] = text
                    stack.append(match.group(2))
                else:
                    stack.append("")
                    continue
            elif match := re.match(r"rpc\s+(\w+)\s*\(", line):
                found[".".join([package, *stack, match.group(1)])] = text
                if line.endswith("{"):
                    stack.append("")
                continue
            elif match := re.match(r"(?:optional\s+|repeated\s+)?(?:map<[^>]+>|[\w.]+)\s+(\w+)\s*=\s*-?\d+", line):
                found[".".join([package, *[s for s in stack if s], match.group(1)])] = text
            if line.startswith("}") or line.endswith("};"):
                if stack and not line.endswith("};"):
                    stack.pop()
            elif line.endswith("}") and "{" not in line and stack:
                stack.pop()
    return found


class _Schemas:
    def __init__(self, docs: dict[str, str]) -> None:
        self.docs = docs
        self.schemas: dict[str, Any] = {"google.rpc.Status": _STATUS, "google.protobuf.Any": _WELL_KNOWN["google.protobuf.Any"]}

    def ref(self, full_name: str) -> dict[str, str]:
        return {"$ref": f"#/components/schemas/{full_name}"}

    def message(self, descriptor: Descriptor) -> dict[str, Any]:
        if descriptor.full_name in _WELL_KNOWN:
            return dict(_WELL_KNOWN[descriptor.full_name])
        if descriptor.full_name not in self.schemas:
            self.schemas[descriptor.full_name] = {}  # taken, for recursive messages
            properties = {f.json_name: self.field(f) for f in descriptor.fields}
            schema: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
            if self.docs.get(descriptor.full_name):
                schema["description"] = self.docs[descriptor.full_name]
            self.schemas[descriptor.full_name] = schema
        return self.ref(descriptor.full_name)

    def enum(self, descriptor: EnumDescriptor) -> dict[str, Any]:
        if descriptor.full_name not in self.schemas:
            values = [v.name for v in descriptor.values]
            lines = [f"{v.name}: {self.docs.get(f'{descriptor.full_name}.{v.name}', '')}".rstrip(": ") for v in descriptor.values]
            description = self.docs.get(descriptor.full_name, "") + "\n\n" + "\n".join(f"- {line}" for line in lines)
            self.schemas[descriptor.full_name] = {"type": "string", "enum": values, "description": description.strip()}
        return self.ref(descriptor.full_name)

    def value(self, field: Any) -> dict[str, Any]:  # a FieldDescriptor, pure Python or upb
        if field.message_type is not None:
            return self.message(field.message_type)
        if field.enum_type is not None:
            return self.enum(field.enum_type)
        return dict(_SCALARS[field.type])

    def field(self, field: FieldDescriptor) -> dict[str, Any]:
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            schema: dict[str, Any] = {"type": "object", "additionalProperties": self.value(field.message_type.fields_by_name["value"])}
        elif field.is_repeated:
            schema = {"type": "array", "items": self.value(field)}
        else:
            schema = self.value(field)
        doc = self.docs.get(field.full_name)
        if doc:
            schema = {"description": doc, **schema} if "$ref" not in schema else {"description": doc, "allOf": [schema]}
        return schema


def _parameters(route: transcode.Route, schemas: _Schemas) -> list[dict[str, Any]]:
    descriptor = route.request.DESCRIPTOR
    parameters = []
    bound = set(route.variables.values())
    for name in route.variables.values():
        field = descriptor.fields_by_name[name.split(".")[0]]
        parameters.append({"name": name, "in": "path", "required": True, "schema": schemas.value(field) if field.message_type is None else {"type": "string"},
                           "description": schemas.docs.get(field.full_name, "")})
    if not route.body:
        for field in descriptor.fields:
            if field.name in bound or field.message_type is not None and field.message_type.full_name not in _WELL_KNOWN:
                continue
            schema = {"type": "array", "items": schemas.value(field)} if field.is_repeated else schemas.value(field)
            parameters.append({"name": field.json_name, "in": "query", "required": False, "schema": schema,
                               "description": schemas.docs.get(field.full_name, "") + (" (also accepted as " + field.name + ")" if field.name != field.json_name else ""),
                               **({"explode": True} if field.is_repeated else {})})
    return parameters


def document() -> dict[str, Any]:
    """The OpenAPI document of every route of the service."""
    docs = comments()
    schemas = _Schemas(docs)
    paths: dict[str, Any] = {}
    error = {"description": "A refusal: google.rpc.Status with an ErrorInfo reason",
             "content": {"application/json": {"schema": schemas.ref("google.rpc.Status")}}}
    seen: dict[str, int] = {}
    for route in transcode.routes(contract.SERVICE):
        method = route.method_descriptor
        path = re.sub(r"\{([\w.]+)=[^}]*\}", r"{\1}", route.template)
        seen[route.rpc] = seen.get(route.rpc, 0) + 1
        operation: dict[str, Any] = {
            "operationId": route.rpc if seen[route.rpc] == 1 else f"{route.rpc}{seen[route.rpc]}",
            "summary": route.rpc,
            "description": docs.get(method.full_name, ""),
            "tags": [contract.SERVICE.name],
            "parameters": _parameters(route, schemas),
            "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": schemas.message(method.output_type)}}},
                          "default": error},
            "security": [{"bearer": []}, {}],
        }
        if route.body == "*":
            body = schemas.message(method.input_type)
            operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
        elif route.body:
            operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": schemas.field(method.input_type.fields_by_name[route.body])}}}
        if route.rpc == "WatchEvents":
            operation["parameters"].append({"name": "Last-Event-ID", "in": "header", "required": False, "schema": {"type": "string"},
                                            "description": "Server-Sent Events: resume after this event sequence (as afterSequence)."})
            operation["responses"]["200"] = {"description": "One WatchEventsResponse per event: Server-Sent Events (id: sequence, "
                                             "event: kind, data: JSON) with Accept: text/event-stream, else one JSON object a line.",
                                             "content": {"text/event-stream": {"schema": {"type": "string"}},
                                                         "application/x-ndjson": {"schema": schemas.message(method.output_type)}}}
        if route.rpc == "DownloadCheckpointFiles":
            operation["parameters"] = [p for p in operation["parameters"] if p["in"] == "path"]
            operation["parameters"].append({"name": "Range", "in": "header", "required": False, "schema": {"type": "string"}})
            operation["responses"]["200"] = {"description": "The file's bytes; ETag is its SHA-256.", "content": {"application/octet-stream": {"schema": {"type": "string", "contentMediaType": "application/octet-stream"}}}}
            operation["responses"]["206"] = {"description": "The bytes of the Range.", "content": {"application/octet-stream": {"schema": {"type": "string", "contentMediaType": "application/octet-stream"}}}}
        if route.rpc == "UploadCheckpointFiles":
            operation["description"] = ("Stores one file of a checkpoint: its raw bytes as the body (Content-Length is its size), "
                                        "checked against sha256 and published atomically, as a gRPC upload of that one file. " + operation["description"])
            operation["parameters"] = [p for p in operation["parameters"] if p["in"] == "path"] + [
                {"name": "path", "in": "query", "required": True, "schema": {"type": "string"}, "description": "Path of the file in the checkpoint."},
                {"name": "sha256", "in": "query", "required": True, "schema": {"type": "string", "pattern": "^[0-9a-f]{64}$"}, "description": "SHA-256 of the file, lower-case hex."},
            ]
            operation["requestBody"] = {"required": True, "content": {"application/octet-stream": {"schema": {"type": "string", "contentMediaType": "application/octet-stream"}}}}
        paths.setdefault(path, {})[route.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "Model registry", "version": "v1", "description": docs.get(contract.SERVICE.full_name, "")},
        "paths": paths,
        "components": {"schemas": dict(sorted(schemas.schemas.items())),
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }


def render() -> bytes:
    return json.dumps(document(), indent=1, sort_keys=False).encode() + b"\n"


if __name__ == "__main__":
    sys.stdout.write(render().decode())
