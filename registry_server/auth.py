"""Who is calling and what they may do: bearer tokens read from a file, roles, and the principal of
the call in progress."""

from __future__ import annotations

import contextvars
import hashlib
import hmac
import ipaddress
import logging
import stat
from dataclasses import dataclass
from pathlib import Path

from . import contract, metrics
from .errors import PermissionDenied, Unauthenticated

log = logging.getLogger(__name__)

VIEWER, EDITOR, ADMIN = "viewer", "editor", "admin"
ROLES = (VIEWER, EDITOR, ADMIN)  # each role may do everything the ones before it may



@dataclass(frozen=True)
class Principal:
    """An authenticated caller: its name (recorded as `owner`) and its role."""

    name: str
    role: str

    def may(self, role: str) -> bool:
        return ROLES.index(self.role) >= ROLES.index(role)

    @property
    def deletes_only_own(self) -> bool:
        return self.role != ADMIN


# Servers without a token file let everyone do everything, and record no owner.
ANONYMOUS = Principal("", ADMIN)
_current: contextvars.ContextVar[Principal] = contextvars.ContextVar("principal", default=ANONYMOUS)


def current() -> Principal:
    """The principal of the call this thread is serving."""
    return _current.get()


def set_current(principal: Principal) -> contextvars.Token[Principal]:
    return _current.set(principal)


def reset_current(token: contextvars.Token[Principal]) -> None:
    _current.reset(token)


def required_role(rpc: str) -> str:
    """The role the RPC declares in the protos (minimum_role)."""
    return contract.RPCS[rpc].role


def authorize(principal: Principal, rpc: str) -> None:
    """Raises PermissionDenied unless the principal's role allows the RPC."""
    needed = required_role(rpc)
    if not principal.may(needed):
        raise PermissionDenied(
            "ROLE_NOT_ALLOWED",
            f"{rpc} needs the {needed} role; {principal.name!r} is a {principal.role}",
            rpc=rpc,
            principal=principal.name,
            role=principal.role,
            required_role=needed,
        )


def parse_tokens(text: str) -> list[tuple[bytes, Principal]]:
    """`TOKEN PRINCIPAL ROLE` a line, `#` starts a comment. Errors name the line number and never any
    field of it: a line written in the wrong order could hold the token in any place."""
    entries: list[tuple[bytes, Principal]] = []
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        if len(fields) != 3:
            raise ValueError(f"line {number}: expected TOKEN PRINCIPAL ROLE, got {len(fields)} fields")
        token, name, role = fields
        if role not in ROLES:
            raise ValueError(f"line {number}: the third field is not a role; one of {', '.join(ROLES)}")
        digest = _digest(token)
        if any(hmac.compare_digest(digest, seen) for seen, _ in entries):
            raise ValueError(f"line {number}: the same token appears twice")
        entries.append((digest, Principal(name, role)))
    if not entries:
        raise ValueError("no tokens: every call would be refused (comment out --auth-tokens to serve without them)")
    return entries


def _digest(token: str) -> bytes:
    # Comparing fixed-length digests keeps the comparison's time independent of the token's length.
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def _read_token_file(path: str) -> list[tuple[bytes, Principal]]:
    """The tokens of the file; warns when other users may read it."""
    file = Path(path)
    if file.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("the token file %s is open to other users (mode %o): chmod 600 it", path, stat.S_IMODE(file.stat().st_mode))
    return parse_tokens(file.read_text())


class TokenFile:
    """The tokens of `--auth-tokens FILE`: read at start (errors raise), and again on `reload`."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._entries = _read_token_file(path)

    def reload(self) -> bool:
        """Reads the file again; on an error (an empty file too) keeps the tokens it had and logs why,
        never a token."""
        try:
            entries = _read_token_file(self.path)
        except (OSError, ValueError, UnicodeDecodeError) as error:
            log.error("auth tokens not reloaded from %s, keeping the previous ones: %s", self.path, error)
            metrics.tokens_reloaded(False)
            return False
        self._entries = entries
        metrics.tokens_reloaded(True)
        log.info("auth tokens reloaded from %s: %d principals", self.path, len(entries))
        return True

    def authenticate(self, authorization: str | None) -> tuple[Principal, bytes]:
        """The principal of an `authorization: Bearer TOKEN` value, and the token's digest;
        Unauthenticated when there is none."""
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("MISSING_TOKEN", "send the metadata `authorization: Bearer TOKEN`")
        presented = _digest(token.strip())
        found = self._find(presented)
        if found is None:
            raise Unauthenticated("INVALID_TOKEN", "the bearer token is not valid")
        return found, presented

    def grants(self, digest: bytes, principal: Principal) -> bool:
        """Whether the token of `digest` still names this principal with this role (after a reload)."""
        return self._find(digest) == principal

    def _find(self, presented: bytes) -> Principal | None:
        found = None
        for digest, principal in self._entries:  # every entry, so the time taken tells nothing
            if hmac.compare_digest(digest, presented):
                found = principal
        return found


def check_exposure(host: str, has_tokens: bool, allow_unauthenticated: bool) -> None:
    """Without tokens every caller may do everything: refuses (ValueError) to serve that beyond this
    machine unless explicitly allowed, and warns when it is."""
    if has_tokens or is_loopback(host):
        return
    if not allow_unauthenticated:
        raise ValueError(
            f"refusing to serve {host} without authentication: give --auth-tokens FILE, "
            "or --insecure-allow-unauthenticated to let anyone who can reach it do anything"
        )
    log.warning("serving %s WITHOUT authentication: anyone who can reach it may do anything", host)


def is_loopback(host: str) -> bool:
    """Whether binding `host` keeps the server reachable from this machine only."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
