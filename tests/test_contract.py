"""The contract declares what the server does: every error reason it can send is catalogued in the
protos (ErrorReason), and the client imports nothing of the server."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from modelregistry.v1 import error_reason_pb2

from registry_server import contract, validation

SERVER = Path(__file__).resolve().parent.parent / "registry_server"
# The domain errors and the helpers that make them: their first argument is the ErrorInfo reason.
ERROR_CONSTRUCTORS = {
    "NotFound", "AlreadyExists", "InvalidArgument", "FailedPrecondition", "Unauthenticated", "PermissionDenied",
    "ResourceExhausted", "Unavailable", "Aborted", "DataLoss", "Internal", "invalid", "OutOfRange", "Unimplemented",
}
# Reasons the server names in the message of a stream it cancels (no ErrorInfo can travel then).
CANCELLATION_REASONS = {"STREAM_IDLE", "TOKEN_REVOKED"}


def reasons_in_source() -> set[str]:
    """Every literal reason passed to an error constructor anywhere in the server."""
    found = set()
    for path in SERVER.rglob("*.py"):
        if "migrations" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and node.args:
                name = getattr(node.func, "attr", getattr(node.func, "id", None))
                first = node.args[0]
                if name in ERROR_CONSTRUCTORS and isinstance(first, ast.Constant) and isinstance(first.value, str):
                    found.add(first.value)
    return found


def reasons_of_repeated_fields() -> set[str]:
    """TOO_MANY_<FIELD> of every repeated request field that declares a cap (validation.check_request)."""
    found = set()
    for method in contract.SERVICE.methods:
        stack, seen = [method.input_type], set()
        while stack:
            message = stack.pop()
            if message.full_name in seen or not message.full_name.startswith("modelregistry."):
                continue
            seen.add(message.full_name)
            for field in message.fields:
                if contract.max_items(field):
                    found.add(f"TOO_MANY_{field.name.upper()}")
                if field.message_type is not None:
                    stack.append(field.message_type)
    return found


def test_every_reason_the_server_can_send_is_catalogued() -> None:
    catalogued = {name.removeprefix("ERROR_REASON_") for name in error_reason_pb2.ErrorReason.keys()[1:]}
    sent = reasons_in_source() | reasons_of_repeated_fields() | CANCELLATION_REASONS | {"TOO_MANY_EDITORS"}
    assert len(sent) > 60  # the scan found them
    assert sent - catalogued == set(), "add these to protos/modelregistry/v1/error_reason.proto"
    assert validation.principals(["a"], "editors") == ["a"]  # TOO_MANY_EDITORS comes from here


def test_the_client_imports_nothing_of_the_server() -> None:
    """registry_client stands alone: importing all of it (CLI included) loads no registry_server module."""
    code = (
        "import sys, pkgutil, importlib, registry_client\n"
        "for module in pkgutil.walk_packages(registry_client.__path__, 'registry_client.'):\n"
        "    importlib.import_module(module.name)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'registry_server'))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "[]"
