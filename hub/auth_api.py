"""The hub's own authorization server: ``/.well-known/smart-configuration`` (public), the OAuth2
client-credentials token endpoint for registered clients (``POST /auth/token``: client secret, or a
signed JWT as SMART Backend Services' ``private_key_jwt``), and break-the-glass (``POST
/auth/break-glass``): a clinician declares an emergency reason and gets, for ``HUB_BREAK_GLASS_TTL_S``, a
token for that one patient's compartment, every use of which the audit trail marks BTG."""

from __future__ import annotations

import base64
import binascii
import threading
import time
from typing import Any
from urllib.parse import parse_qsl

import jwt
import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from hub.auth import ROLE_SCOPES, Principal, issue_token, parse_scope, require_permission
from hub.auth_secrets import check_secret
from hub.errors import BadRequest
from hub.store.models import ApiClient

public = APIRouter(tags=["auth"])
router = APIRouter(prefix="/auth", tags=["auth"])

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_ALGS = ["RS384", "ES384", "RS256", "ES256"]


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(body),
        status_code=status,
        media_type="application/json",
        headers={"Cache-Control": "no-store", **(headers or {})},
    )


def _oauth_error(error: str, description: str, status: int = 400) -> Response:
    headers = {"WWW-Authenticate": 'Basic realm="hub"'} if status == 401 else None
    return _json({"error": error, "error_description": description}, status, headers)


@public.get("/.well-known/smart-configuration", summary="SMART configuration (public)")
def smart_configuration(request: Request) -> Response:
    settings = request.app.state.settings
    base = str(request.base_url).rstrip("/")
    body: dict[str, Any] = {
        "token_endpoint": f"{base}/auth/token",
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": [
            "client_secret_basic",
            "client_secret_post",
            "private_key_jwt",
        ],
        "token_endpoint_auth_signing_alg_values_supported": ASSERTION_ALGS,
        "scopes_supported": sorted({s for scopes in ROLE_SCOPES.values() for s in scopes} | {"patient/*.rs"}),
        "capabilities": [
            "client-confidential-symmetric",
            "client-confidential-asymmetric",
            "permission-v2",
            "permission-user",
            "permission-patient",
        ],
    }
    if settings.oidc_issuer:
        body["issuer"] = settings.oidc_issuer
        if settings.oidc_jwks_url:
            body["jwks_uri"] = settings.oidc_jwks_url
    return _json(body)


# --- client credentials ---------------------------------------------------------------------------------

_seen_jti: dict[str, float] = {}
_jti_lock = threading.Lock()


def _engine(request: Request) -> Any:
    runtime = getattr(request.app.state, "runtime", None)
    if runtime is not None:
        return runtime.read_engine
    from hub.db import get_read_engine

    return get_read_engine(request.app.state.settings.sqlalchemy_url)


def _client(request: Request, client_id: str) -> ApiClient | None:
    with Session(_engine(request)) as session:
        client = session.get(ApiClient, client_id)
        if client is not None:
            session.expunge(client)
    return client if client is not None and client.active else None


def _check_assertion(request: Request, assertion: str) -> tuple[ApiClient | None, str]:
    try:
        unverified = jwt.decode(assertion, options={"verify_signature": False})
        header = jwt.get_unverified_header(assertion)
    except jwt.InvalidTokenError:
        return None, "the client assertion is not a JWT"
    client_id = str(unverified.get("iss") or "")
    client = _client(request, client_id)
    if client is None or not client.jwks:
        return None, "unknown client, or a client without registered keys"
    keys = [k for k in client.jwks.get("keys", []) if header.get("kid") in (None, k.get("kid"))]
    token_url = str(request.base_url).rstrip("/") + "/auth/token"
    for jwk in keys:
        try:
            claims = jwt.decode(
                assertion,
                jwt.PyJWK.from_dict(jwk).key,
                algorithms=ASSERTION_ALGS,
                audience=token_url,
                issuer=client_id,
                options={"require": ["exp", "jti", "sub", "iss", "aud"]},
                leeway=30,
            )
        except (jwt.InvalidTokenError, jwt.PyJWKError):
            continue
        if claims["sub"] != client_id or float(claims["exp"]) > time.time() + 300 + 30:
            return None, "the client assertion's sub must be the client and it may live 5 minutes at most"
        now = time.time()
        with _jti_lock:
            for jti, until in list(_seen_jti.items()):
                if until < now:
                    del _seen_jti[jti]
            key = f"{client_id}|{claims['jti']}"
            if key in _seen_jti:
                return None, "the client assertion was used before"
            _seen_jti[key] = float(claims["exp"]) + 60
        return client, ""
    return None, "the client assertion's signature, audience or lifetime is not valid"


def _basic(request: Request) -> tuple[str, str] | None:
    auth = request.headers.get("authorization", "")
    if not auth.lower().startswith("basic "):
        return None
    try:
        user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return user, password


@router.post("/token", summary="OAuth2 client-credentials grant for registered clients")
async def token(request: Request) -> Response:
    form = dict(parse_qsl((await request.body()).decode("utf-8", "replace"), keep_blank_values=True))
    if form.get("grant_type") != "client_credentials":
        return _oauth_error("unsupported_grant_type", "only grant_type=client_credentials is supported")
    client: ApiClient | None = None
    if form.get("client_assertion_type") == ASSERTION_TYPE and form.get("client_assertion"):
        client, problem = _check_assertion(request, form["client_assertion"])
        if client is None:
            return _oauth_error("invalid_client", problem, 401)
    else:
        creds = _basic(request) or (
            (form["client_id"], form.get("client_secret", "")) if form.get("client_id") else None
        )
        if creds is None:
            return _oauth_error("invalid_client", "client authentication is required", 401)
        request.state.audit_agent = creds[0]
        found = _client(request, creds[0])
        if found is None or not found.secret_hash or not check_secret(creds[1], found.secret_hash):
            return _oauth_error("invalid_client", "unknown client or wrong secret", 401)
        client = found
    request.state.audit_agent = client.client_id
    allowed = client.scopes.split()
    asked = form.get("scope", "").split() or allowed
    granted = [s for s in asked if _covered(s, allowed)]
    if not granted or any(parse_scope(s) is None for s in granted):
        return _oauth_error("invalid_scope", f"this client may ask for: {' '.join(allowed) or 'nothing'}")
    settings = request.app.state.settings
    access = issue_token(
        settings,
        client.role,
        subject=client.client_id,
        scopes=granted,
        facilities=client.facilities.split(),
        client_id=client.client_id,
    )
    return _json(
        {
            "access_token": access,
            "token_type": "bearer",
            "expires_in": settings.token_ttl_s,
            "scope": " ".join(granted),
        }
    )


def _covered(asked: str, allowed: list[str]) -> bool:
    """Whether a registered scope covers ``asked``: the same scope, or a narrower one (the same context,
    the registered type or any type under ``*``, a subset of its interactions: ``user/Observation.rs``
    under ``user/*.rs``, ``system/*.c`` under ``system/*.cu``)."""
    if asked in allowed:
        return True
    want = parse_scope(asked)
    if want is None:
        return False
    for scope in allowed:
        have = parse_scope(scope)
        if have is None or have[0] != want[0] or have[1] not in ("*", want[1]):
            continue
        if set(want[2]) <= set(have[2]):
            return True
    return False


# --- break the glass ------------------------------------------------------------------------------------


@router.post("/break-glass", summary="Emergency access to one patient, audited (clinicians)")
async def break_glass(
    request: Request, principal: Principal = Depends(require_permission("break-glass"))
) -> Response:
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError as exc:
        raise BadRequest('the body must be JSON: {"patient": …, "reason": …}') from exc
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    patient = str(body.get("patient") or "").removeprefix("Patient/").strip()
    reason = str(body.get("reason") or "").strip()
    if not patient or len(reason) < 10:
        raise BadRequest("break-the-glass needs the patient and a reason of at least 10 characters")
    settings = request.app.state.settings
    request.state.audit_patient = patient
    request.state.audit_reason = reason[:2000]
    access = issue_token(
        settings,
        "clinician",
        subject=principal.subject,
        scopes=["patient/*.rs"],
        patient=patient,
        client_id=principal.client_id,
        ttl_s=settings.break_glass_ttl_s,
        extra={"btg": reason[:500]},
    )
    return _json(
        {
            "access_token": access,
            "token_type": "bearer",
            "expires_in": settings.break_glass_ttl_s,
            "scope": "patient/*.rs",
            "patient": patient,
        }
    )
