"""Bearer tokens: issuing them (``hub token --role ROLE``) and the one FastAPI dependency that checks them
on every protected route.

Tokens are JWTs (HS256) signed with a key created under ``Settings.var_dir`` on first use. Claims: ``sub``,
``role`` (sender, clinician, ministry, steward, admin), ``scope`` (SMART App Launch v2 scopes such as
``user/*.rs``), ``iat``, ``exp``, ``iss``. ``require_principal`` verifies signature, issuer and expiry and
hands the route a ``Principal``; finer checks (per-scope, per-compartment, the audit trail) belong in
``Principal.require`` so they stay in this one place.
"""

from __future__ import annotations

import os
import re
import secrets
import time
import uuid
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import jwt
from fastapi import Request

from hub.config import Settings
from hub.errors import Forbidden, Unauthorized

ISSUER = "hub"
ALGORITHM = "HS256"
KEY_FILE = "jwt-signing.key"

ROLES = ("sender", "clinician", "ministry", "steward", "admin")

# SMART v2 scopes granted to each role by default (c=create r=read u=update d=delete s=search).
ROLE_SCOPES: dict[str, tuple[str, ...]] = {
    "sender": ("system/*.cruds",),
    "clinician": ("user/*.rs",),
    "ministry": ("system/*.rs",),
    "steward": ("user/Patient.rus", "user/*.rs"),
    "admin": ("system/*.cruds",),
}

_SCOPE = re.compile(r"^(patient|user|system)/(\*|[A-Za-z]+)\.([cruds]+|read|write|\*)$")


def signing_key(var_dir: Path) -> bytes:
    """The HS256 key under ``var_dir``, created (mode 0600) on first use."""
    return _signing_key(str(Path(var_dir).resolve()))


@lru_cache(maxsize=8)
def _signing_key(var_dir: str) -> bytes:
    path = Path(var_dir) / KEY_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(secrets.token_bytes(32).hex().encode())
    return path.read_bytes().strip()


def issue_token(
    settings: Settings,
    role: str,
    *,
    subject: str | None = None,
    scopes: list[str] | None = None,
    ttl_s: int | None = None,
) -> str:
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; one of {', '.join(ROLES)}")
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "sub": subject or f"{role}-{uuid.uuid4().hex[:8]}",
        "role": role,
        "scope": " ".join(scopes if scopes is not None else ROLE_SCOPES[role]),
        "iat": now,
        "exp": now + (ttl_s if ttl_s is not None else settings.token_ttl_s),
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(claims, signing_key(settings.var_dir), algorithm=ALGORITHM)


@dataclass(frozen=True, slots=True)
class Principal:
    subject: str
    role: str
    scopes: tuple[str, ...]

    def allows(self, resource_type: str, interaction: str) -> bool:
        """Whether a SMART v2 scope grants ``interaction`` (one of c r u d s) on ``resource_type``."""
        for scope in self.scopes:
            m = _SCOPE.match(scope)
            if m is None:
                continue
            _ctx, rtype, perms = m.groups()
            if rtype not in ("*", resource_type):
                continue
            granted = {"read": "rs", "write": "cud", "*": "cruds"}.get(perms, perms)
            if interaction in granted:
                return True
        return False

    def require(self, resource_type: str, interaction: str) -> None:
        if not self.allows(resource_type, interaction):
            raise Forbidden(f"role {self.role} may not {_VERBS[interaction]} {resource_type}")


class BearerRequired(Unauthorized):
    """401 with the challenge RFC 6750 asks for."""

    headers = {"WWW-Authenticate": 'Bearer realm="hub"'}


_VERBS = {"c": "create", "r": "read", "u": "update", "d": "delete", "s": "search"}


# Tokens already verified, until their expiry: verifying an HS256 JWT costs ≈0.1–0.3 ms, a good part of
# a read's budget, and a client sends the same token with every request. Keyed by the key's directory
# too, since the signing key lives there. Cleared whole when full (tokens are short-lived anyway).
_VERIFIED: dict[tuple[str, str], tuple[Principal, float]] = {}
_VERIFIED_MAX = 4096


def decode_token(settings: Settings, token: str) -> Principal:
    key = (str(settings.var_dir), token)
    hit = _VERIFIED.get(key)
    if hit is not None and hit[1] > time.time():
        return hit[0]
    principal, exp = _verify(settings, token)
    if len(_VERIFIED) >= _VERIFIED_MAX:
        _VERIFIED.clear()
    _VERIFIED[key] = (principal, exp)
    return principal


def _verify(settings: Settings, token: str) -> tuple[Principal, float]:
    try:
        claims = jwt.decode(
            token,
            signing_key(settings.var_dir),
            algorithms=[ALGORITHM],
            issuer=ISSUER,
            options={"require": ["exp", "iat", "sub", "role"]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise BearerRequired("the bearer token has expired") from exc
    except jwt.InvalidTokenError as exc:
        raise BearerRequired(f"the bearer token is not valid ({exc})") from exc
    role = claims.get("role")
    if role not in ROLES:
        raise BearerRequired("the bearer token carries no known role")
    scope = claims.get("scope", "")
    return Principal(str(claims["sub"]), str(role), tuple(str(scope).split())), float(claims["exp"])


async def require_principal(request: Request) -> Principal:
    """The FastAPI dependency guarding every route but ``/fhir/metadata`` and health checks (async: it
    does no I/O once the key is cached, so it costs no thread-pool hop)."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise BearerRequired("an Authorization: Bearer token is required")
    principal = decode_token(request.app.state.settings, token.strip())
    request.state.principal = principal
    return principal


def require_role(*roles: str) -> Any:
    """A dependency admitting only principals of ``roles`` (e.g. the operator API: admin)."""

    async def dependency(request: Request) -> Principal:
        principal = await require_principal(request)
        if principal.role not in roles:
            raise Forbidden(f"role {principal.role} may not use this endpoint (needs {' or '.join(roles)})")
        return principal

    return dependency


async def mpi_guard(request: Request) -> Principal:
    """The MPI routes: ``$match`` and ``$ihe-pix`` need Patient search; the review queue (``/mpi/…``)
    is for stewards and admins."""
    principal = await require_principal(request)
    if request.url.path.startswith("/mpi/"):
        if principal.role not in ("steward", "admin"):
            raise Forbidden(
                f"role {principal.role} may not use the MPI review queue (needs steward or admin)"
            )
    else:
        principal.require("Patient", "s")
    return principal
