"""Who may do what: bearer tokens (the hub's own, or JWTs of an external OpenID provider), the roles'
least privilege, and the one FastAPI dependency that checks them on every protected route.

**Tokens.** The hub issues its own HS256 JWTs (``hub token``, the ``/auth/token`` client-credentials
endpoint) signed with a key created under ``Settings.var_dir``. With ``HUB_OIDC_ISSUER`` set it also takes
JWTs of that OpenID provider: issuer, audience (``HUB_OIDC_AUDIENCE``), signature by a key of the
provider's JWKS picked by ``kid`` (fetched again when an unknown ``kid`` appears: key rotation), RS256 or
ES256 (``HUB_OIDC_ALGORITHMS``), ``exp``/``nbf`` with ``HUB_OIDC_LEEWAY_S`` of clock skew; roles, scopes,
facilities and the patient come from configurable claims (``HUB_OIDC_*_CLAIM``).

**Roles.** Each role has a ceiling (:data:`ROLE_CEILING`) that no scope lifts, so a token of an
identity provider that grants too much still gets only what its role may do:

- ``sender``: create and update (FHIR writes, HL7 v2 intake) for the facilities it is bound to; it reads,
  searches and deletes nothing.
- ``clinician``: reads and searches; ``patient/…`` scopes reach only the compartment of its ``patient``
  claim (the golden record and its sources).
- ``ministry``: no identified resource at all (Organization and Location only): statistics and
  de-identified exports through the ``stats`` and ``export`` permissions.
- ``steward``: reads, and the MPI review queue (``mpi-review``).
- ``admin``: everything, the audit trail (``audit``), senders and settings (``admin``).

**Routes declare what they need** with one of the dependencies below, never by comparing role names:

- ``Depends(require_principal)`` then ``principal.require(resource_type, "r")`` (SMART v2 ``c r u d s``);
- ``Depends(require_permission("stats"))`` for a non-FHIR capability of :data:`PERMISSIONS`.

Both raise 401/403 as an OperationOutcome, and the audit middleware (``hub.audit``) records the request,
its principal and its outcome, refused or not.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import secrets
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import jwt
from fastapi import Request

from hub.config import Settings
from hub.errors import Forbidden, Unauthorized

log = logging.getLogger(__name__)

ISSUER = "hub"
ALGORITHM = "HS256"
KEY_FILE = "jwt-signing.key"

ROLES = ("sender", "clinician", "ministry", "steward", "admin")

# Capabilities outside the FHIR resource scopes, and the roles that hold them.
PERMISSIONS = ("intake", "stats", "export", "mpi-review", "audit", "admin", "break-glass")
ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    "sender": frozenset({"intake"}),
    "clinician": frozenset({"break-glass"}),
    "ministry": frozenset({"stats", "export"}),
    "steward": frozenset({"mpi-review"}),
    "admin": frozenset({"mpi-review", "audit", "admin", "stats", "export"}),
}

# Resource types that name no patient or person: the only ones the ministry reads.
NON_IDENTIFYING = frozenset({"Organization", "Location", "HealthcareService", "Endpoint"})

# The most each role may do, whatever its scopes say: {resource type or "*": interactions}.
ROLE_CEILING: dict[str, dict[str, str]] = {
    "sender": {"*": "cu"},
    "clinician": {"*": "rs"},
    "ministry": {t: "rs" for t in NON_IDENTIFYING},
    "steward": {"*": "rs", "Patient": "rus"},
    "admin": {"*": "cruds"},
}

# SMART v2 scopes granted to each role by a hub-issued token unless others are asked for.
ROLE_SCOPES: dict[str, tuple[str, ...]] = {
    "sender": ("system/*.cu",),
    "clinician": ("user/*.rs",),
    "ministry": ("system/Organization.rs", "system/Location.rs"),
    "steward": ("user/Patient.rus", "user/*.rs"),
    "admin": ("system/*.cruds",),
}

# SMART App Launch v2 (``c r u d s`` in that order) and the v1 forms (read, write, *). A scope with a
# granular ``?param=value`` restriction is recognised and grants nothing (the hub does not narrow by
# search parameters, so granting the whole type would be more than asked).
_SCOPE = re.compile(r"^(patient|user|system)/(\*|[A-Z][A-Za-z]*)\.(c?r?u?d?s?|read|write|\*)(\?\S+)?$")
_V1 = {"read": "rs", "write": "cud", "*": "cruds"}
_VERBS = {"c": "create", "r": "read", "u": "update", "d": "delete", "s": "search"}

Access = Literal["all", "patient"]


def parse_scope(scope: str) -> tuple[str, str, str] | None:
    """(context, resource type or ``*``, interactions) of a SMART scope, or None when it grants nothing
    (not a resource scope, malformed, empty, or granular)."""
    m = _SCOPE.match(scope)
    if m is None or m.group(4) or not m.group(3):
        return None
    ctx, rtype, perms = m.group(1), m.group(2), m.group(3)
    return ctx, rtype, _V1.get(perms, perms)


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
    facilities: Iterable[str] | None = None,
    patient: str | None = None,
    client_id: str | None = None,
    extra: dict[str, Any] | None = None,
) -> str:
    """A hub-signed token. A sender's names the facilities (MSH-4) it may send for."""
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
    if facilities:
        claims["facility"] = sorted(set(facilities))
    if patient:
        claims["patient"] = patient
    if client_id:
        claims["client_id"] = client_id
    if extra:
        claims.update(extra)
    return jwt.encode(claims, signing_key(settings.var_dir), algorithm=ALGORITHM)


@dataclass(frozen=True, slots=True)
class Principal:
    subject: str
    role: str
    scopes: tuple[str, ...]
    facilities: tuple[str, ...] = ()  # a sender's facilities (MSH-4)
    patient: str | None = None  # the patient context of ``patient/`` scopes
    client_id: str | None = None
    issuer: str = ISSUER
    emergency: str | None = None  # break-the-glass: the declared reason
    _parsed: tuple[tuple[str, str, str], ...] = field(default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self._parsed:
            parsed = tuple(p for p in (parse_scope(s) for s in self.scopes) if p is not None)
            object.__setattr__(self, "_parsed", parsed)

    def has(self, permission: str) -> bool:
        return permission in ROLE_PERMISSIONS.get(self.role, frozenset())

    def _ceiling(self, resource_type: str, interaction: str) -> bool:
        ceiling = ROLE_CEILING.get(self.role, {})
        return interaction in ceiling.get(resource_type, ceiling.get("*", ""))

    def access(self, resource_type: str, interaction: str) -> Access | None:
        """``all`` when a user/system scope grants ``interaction`` (one of c r u d s) on ``resource_type``,
        ``patient`` when only a patient scope does (and the token names its patient), else None."""
        if not self._ceiling(resource_type, interaction):
            return None
        if resource_type == "AuditEvent" and not self.has("audit"):
            return None  # the audit trail is the admins' (hub.audit), whatever the scopes
        best: Access | None = None
        for ctx, rtype, perms in self._parsed:
            if rtype not in ("*", resource_type) or interaction not in perms:
                continue
            if ctx != "patient":
                return "all"
            if self.patient:
                best = "patient"
        return best

    def allows(self, resource_type: str, interaction: str) -> bool:
        return self.access(resource_type, interaction) is not None

    def require(self, resource_type: str, interaction: str) -> Access:
        granted = self.access(resource_type, interaction)
        if granted is None:
            raise Forbidden(f"role {self.role} may not {_VERBS[interaction]} {resource_type}")
        return granted

    def require_facility(self, facility: str) -> None:
        if facility not in self.facilities:
            raise Forbidden(f"{self.subject} may not send for facility {facility!r}")

    @property
    def label(self) -> str:
        return f"{self.role}:{self.subject}"


class BearerRequired(Unauthorized):
    """401 with the challenge RFC 6750 asks for."""

    headers = {"WWW-Authenticate": 'Bearer realm="hub"'}


# --- verification ---------------------------------------------------------------------------------------

# Tokens already verified, until their expiry: verifying a JWT costs ≈0.1–0.3 ms, a good part of a read's
# budget, and a client sends the same token with every request. Keyed by the settings' identity too.
# Cleared whole when full (tokens are short-lived anyway).
# An entry: (principal, not before, expires, the provider's key set and the token's kid). A token of the
# provider is taken from here only while its key is still published: when a token with a new kid made
# the hub fetch the keys again and the old key is gone, tokens signed by it stop working at once.
_Entry = tuple[Principal, float, float, "JWKS | None", "str | None"]
_VERIFIED: dict[tuple[tuple[Any, ...], str], _Entry] = {}
_VERIFIED_MAX = 4096


def _trust(settings: Settings) -> tuple[Any, ...]:
    """What a token's verification depends on besides the token: entries verified under other settings
    (another key directory, provider, audience or skew) are not reused."""
    return (
        settings.var_dir,
        settings.oidc_issuer,
        settings.oidc_audience,
        settings.oidc_leeway_s,
        settings.oidc_algorithms,
    )


def decode_token(settings: Settings, token: str) -> Principal:
    key = (_trust(settings), token)
    hit = _cached(key)
    if hit is not None:
        return hit
    entry = _verify(settings, token)
    if len(_VERIFIED) >= _VERIFIED_MAX:
        _VERIFIED.clear()
    _VERIFIED[key] = entry
    return entry[0]


def _cached(key: tuple[tuple[Any, ...], str]) -> Principal | None:
    hit = _VERIFIED.get(key)
    if hit is None or not hit[1] <= time.time() < hit[2]:
        return None
    jwks = hit[3]
    if jwks is not None and hit[4] not in jwks.kids:
        return None
    return hit[0]


def _is_local(token: str) -> bool:
    try:
        return jwt.get_unverified_header(token).get("alg") == ALGORITHM
    except jwt.InvalidTokenError as exc:
        raise BearerRequired(f"the bearer token is not valid ({exc})") from exc


def _verify(settings: Settings, token: str) -> _Entry:
    if _is_local(token):
        return _verify_local(settings, token)
    if not settings.oidc_issuer:
        raise BearerRequired(
            "the bearer token is not signed by the hub, and no OpenID provider is configured"
        )
    return _verify_oidc(settings, token)


def _verify_local(settings: Settings, token: str) -> _Entry:
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
    principal = Principal(
        str(claims["sub"]),
        str(role),
        tuple(str(claims.get("scope", "")).split()),
        facilities=_strings(claims.get("facility")),
        patient=_patient(claims.get("patient")),
        client_id=str(claims["client_id"]) if claims.get("client_id") else None,
        emergency=str(claims["btg"]) if claims.get("btg") else None,
    )
    return principal, float(claims.get("nbf", 0)), float(claims["exp"]), None, None


def _strings(value: Any) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        return tuple(v for v in re.split(r"[\s,]+", value) if v)
    if isinstance(value, list | tuple):
        return tuple(str(v) for v in value if v)
    return (str(value),)


def _patient(value: Any) -> str | None:
    if not value:
        return None
    return str(value).removeprefix("Patient/")


def _claim(claims: dict[str, Any], path: str) -> Any:
    """A claim by a dotted path (``realm_access.roles`` for Keycloak's realm roles)."""
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _verify_oidc(settings: Settings, token: str) -> _Entry:
    algorithms = [a.strip() for a in settings.oidc_algorithms.split(",") if a.strip()]
    try:
        header = jwt.get_unverified_header(token)
        if header.get("alg") not in algorithms:
            raise BearerRequired(f"the bearer token's algorithm {header.get('alg')!r} is not accepted")
        jwks = jwks_for(settings)
        key = jwks.key(header.get("kid"))
        claims = jwt.decode(
            token,
            key,
            algorithms=algorithms,
            issuer=settings.oidc_issuer,
            audience=settings.oidc_audience or None,
            leeway=settings.oidc_leeway_s,
            options={"require": ["exp", "iss", "sub"], "verify_aud": bool(settings.oidc_audience)},
        )
    except jwt.ExpiredSignatureError as exc:
        raise BearerRequired("the bearer token has expired") from exc
    except jwt.ImmatureSignatureError as exc:
        raise BearerRequired("the bearer token is not valid yet") from exc
    except jwt.InvalidAudienceError as exc:
        raise BearerRequired("the bearer token is meant for another audience") from exc
    except jwt.InvalidIssuerError as exc:
        raise BearerRequired("the bearer token is from another issuer") from exc
    except (jwt.InvalidTokenError, jwt.PyJWKError) as exc:
        raise BearerRequired(f"the bearer token is not valid ({exc})") from exc
    prefix = settings.oidc_role_prefix
    roles = {
        r.removeprefix(prefix)
        for r in _strings(_claim(claims, settings.oidc_role_claim))
        if r.startswith(prefix) and r.removeprefix(prefix) in ROLES
    }
    if len(roles) != 1:
        raise BearerRequired(
            "the bearer token carries no hub role"
            if not roles
            else "the bearer token carries more than one hub role"
        )
    principal = Principal(
        str(claims["sub"]),
        roles.pop(),
        _strings(_claim(claims, settings.oidc_scope_claim)),
        facilities=_strings(_claim(claims, settings.oidc_facility_claim)),
        patient=_patient(_claim(claims, settings.oidc_patient_claim)),
        client_id=str(claims.get("client_id") or claims.get("azp") or "") or None,
        issuer=str(claims["iss"]),
    )
    leeway = float(settings.oidc_leeway_s)
    nbf, exp = float(claims.get("nbf", 0)) - leeway, float(claims["exp"]) + leeway
    return principal, nbf, exp, jwks, header.get("kid")


class JWKS:
    """The OpenID provider's signing keys by ``kid``: fetched on first use (from ``HUB_OIDC_JWKS_URL``, or
    the ``jwks_uri`` of the issuer's discovery document) and again when a token names a ``kid`` it has
    not seen (the provider rotated its keys), at most once per ``HUB_OIDC_JWKS_MIN_REFRESH_S``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._keys: dict[str | None, Any] = {}
        self._fetched = 0.0
        self._lock = threading.Lock()

    def _url(self) -> str:
        if self.settings.oidc_jwks_url:
            return self.settings.oidc_jwks_url
        discovery = self.settings.oidc_issuer.rstrip("/") + "/.well-known/openid-configuration"
        return str(_get_json(discovery)["jwks_uri"])

    def _refresh(self) -> None:
        keys: dict[str | None, Any] = {}
        for jwk in _get_json(self._url()).get("keys", []):
            if jwk.get("use", "sig") != "sig":
                continue
            try:
                keys[jwk.get("kid")] = jwt.PyJWK.from_dict(jwk).key
            except jwt.PyJWKError:
                continue  # a key type or curve this verifier does not know: tokens signed by it fail
        self._keys = keys
        self._fetched = time.monotonic()

    @property
    def kids(self) -> Any:
        """The key ids published at the last fetch (``None`` stands for a key without one)."""
        return self._keys.keys()

    def key(self, kid: str | None) -> Any:
        with self._lock:
            if kid not in self._keys and (
                not self._fetched or time.monotonic() - self._fetched >= self.settings.oidc_jwks_min_refresh_s
            ):
                try:
                    self._refresh()
                except (OSError, ValueError, KeyError) as exc:
                    log.warning("could not fetch the OpenID provider's keys: %s", type(exc).__name__)
            if kid not in self._keys:
                if kid is None and len(self._keys) == 1:
                    return next(iter(self._keys.values()))
                raise BearerRequired(
                    "the bearer token is signed with a key the OpenID provider does not publish"
                )
            return self._keys[kid]


def _get_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        body: dict[str, Any] = json.loads(resp.read())
        return body


_JWKS: dict[tuple[str, str], JWKS] = {}


def jwks_for(settings: Settings) -> JWKS:
    key = (settings.oidc_issuer, settings.oidc_jwks_url or "")
    found = _JWKS.get(key)
    if found is None or found.settings is not settings:
        found = _JWKS[key] = JWKS(settings) if found is None else found
        found.settings = settings
    return found


# --- dependencies --------------------------------------------------------------------------------------


def bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


async def require_principal(request: Request) -> Principal:
    """The FastAPI dependency guarding every route but the public ones (``/fhir/metadata``,
    ``/.well-known/smart-configuration``, health). Async: a token seen before costs a dict look-up; a new
    token of the OpenID provider is verified on a worker thread (it may fetch the provider's keys)."""
    token = bearer(request)
    if token is None:
        raise BearerRequired("an Authorization: Bearer token is required")
    settings = request.app.state.settings
    hit = _cached((_trust(settings), token))
    if hit is not None:
        principal = hit
    elif _is_local(token):
        principal = decode_token(settings, token)
    else:
        principal = await asyncio.to_thread(decode_token, settings, token)
    request.state.principal = principal
    limiter = getattr(request.app.state, "rate_limiter", None)
    if limiter is not None:
        limiter.check(principal.client_id or principal.subject)
    return principal


def require_permission(*permissions: str) -> Callable[[Request], Any]:
    """A dependency admitting principals whose role holds one of ``permissions`` (see
    :data:`PERMISSIONS`): ``Depends(require_permission("stats"))``. The audit trail records the
    request under the first permission's name."""
    unknown = set(permissions) - set(PERMISSIONS)
    if unknown:
        raise ValueError(f"unknown permission {sorted(unknown)}; one of {', '.join(PERMISSIONS)}")

    async def dependency(request: Request) -> Principal:
        request.state.audit_kind = permissions[0]
        principal = await require_principal(request)
        if not any(principal.has(p) for p in permissions):
            raise Forbidden(
                f"role {principal.role} may not use this endpoint (needs {' or '.join(permissions)})"
            )
        return principal

    return dependency


def require_role(*roles: str) -> Callable[[Request], Any]:
    """Kept for routes that predate permissions: admits only principals of ``roles``."""

    async def dependency(request: Request) -> Principal:
        principal = await require_principal(request)
        if principal.role not in roles:
            raise Forbidden(f"role {principal.role} may not use this endpoint (needs {' or '.join(roles)})")
        return principal

    return dependency


async def mpi_guard(request: Request) -> Principal:
    """The MPI routes: ``$match`` and ``$ihe-pix`` need Patient search over all patients; the review
    queue (``/mpi/…``) needs the ``mpi-review`` permission (stewards and admins)."""
    if request.url.path.startswith("/mpi/"):
        return await require_permission("mpi-review")(request)  # type: ignore[no-any-return]
    principal = await require_principal(request)
    request.state.audit_kind = "mpi"
    if principal.access("Patient", "s") != "all":
        raise Forbidden(f"role {principal.role} may not search all patients")
    return principal


def with_emergency(principal: Principal, patient: str, reason: str) -> Principal:
    return replace(principal, patient=patient, emergency=reason)
