"""What the protos declare about each RPC and request field, read once from the descriptors: the role
an RPC needs (`minimum_role`), whether it changes anything (`idempotency_level`), and the most values
a repeated field of a request may hold (`max_items`). Roles, the audit log and request checks follow
these declarations; nothing here is a second, hand-kept list."""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from modelregistry.v1 import options_pb2, registry_service_pb2

SERVICE = registry_service_pb2.DESCRIPTOR.services_by_name["ModelRegistryService"]
ROLE_NAMES = {options_pb2.ROLE_VIEWER: "viewer", options_pb2.ROLE_EDITOR: "editor", options_pb2.ROLE_ADMIN: "admin"}
ROLE_NUMBERS = {name: number for number, name in ROLE_NAMES.items()}
_NO_SIDE_EFFECTS = descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS
_IDEMPOTENT = descriptor_pb2.MethodOptions.IDEMPOTENT


@dataclass(frozen=True)
class Rpc:
    """The declarations of one RPC."""

    name: str
    role: str  # viewer, editor or admin
    reads_only: bool  # idempotency_level NO_SIDE_EFFECTS: not audited, safe to retry
    idempotent: bool  # NO_SIDE_EFFECTS or IDEMPOTENT: a repeat does no more than the first call


def _rpc(method: MethodDescriptor) -> Rpc:
    options = method.GetOptions()
    role = options.Extensions[options_pb2.minimum_role]
    if role not in ROLE_NAMES:
        raise TypeError(f"{method.full_name} declares no (modelregistry.v1.minimum_role)")
    level = options.idempotency_level
    return Rpc(method.name, ROLE_NAMES[role], level == _NO_SIDE_EFFECTS, level in (_NO_SIDE_EFFECTS, _IDEMPOTENT))


RPCS: dict[str, Rpc] = {method.name: _rpc(method) for method in SERVICE.methods}


def max_items(field: FieldDescriptor) -> int:
    """The declared cap of a repeated or map field; 0 when it declares none."""
    return field.GetOptions().Extensions[options_pb2.max_items]


def undeclared_repeated_fields(message: Descriptor, seen: set[str] | None = None) -> list[str]:
    """Repeated fields reachable from a request message (ours, not google's) that declare no cap."""
    seen = set() if seen is None else seen
    if message.full_name in seen or not message.full_name.startswith("modelregistry."):
        return []
    seen.add(message.full_name)
    missing = []
    for field in message.fields:
        is_map = field.message_type is not None and field.message_type.GetOptions().map_entry
        if field.is_repeated and not max_items(field):
            missing.append(field.full_name)
        if field.message_type is not None and not is_map:
            missing += undeclared_repeated_fields(field.message_type, seen)
    return missing
