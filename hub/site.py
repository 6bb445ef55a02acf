"""The pages a person opens in a browser: ``/`` (what this hub is, and where to go next) and the API
reference at ``/docs`` (Swagger UI), whose script and style come from the pinned ``fastapi-offline``
package and are served by the hub itself: the page works on a network without internet access."""

from __future__ import annotations

from html import escape
from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse, Response

from hub import __version__
from hub.errors import NotFound

ASSETS = Path(fastapi_offline.__file__).parent / "static"
ASSET_TYPES = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon.png": "image/png",
}

router = APIRouter(include_in_schema=False)

LINKS = (
    ("/docs", "API reference", "every HTTP endpoint with its parameters (OpenAPI, Swagger UI)"),
    ("/openapi.json", "OpenAPI document", "the same, machine-readable"),
    ("/fhir/metadata", "FHIR CapabilityStatement", "the FHIR R4 interactions and search parameters"),
    ("/.well-known/smart-configuration", "SMART configuration", "token endpoint, grants and scopes"),
    ("/stats/page", "Health statistics", "the ministry dashboard (needs a ministry or admin token)"),
    ("/mpi/review/page", "MPI review", "possible duplicate patients for data stewards (steward token)"),
    ("/healthz", "Health check", 'answers {"status": "ok"} while the hub serves'),
)

LANDING = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>HL7 v2 to FHIR R4 hub</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{{font-family:system-ui,sans-serif;margin:2rem auto;max-width:46rem;padding:0 1rem;color:#1b1b1b}}
h1{{font-size:1.5rem}}dt{{margin-top:.8rem;font-weight:600}}dd{{margin-left:1rem;color:#444}}
code{{background:#f3f3f3;padding:0 .2rem}}.v{{color:#666;font-size:.85rem}}
</style></head><body>
<h1>HL7 v2 &rarr; FHIR R4 integration hub</h1>
<p>Hospitals send HL7 v2 messages over MLLP or to <code>POST /hl7/v2</code> and receive an ACK once each
message is stored. The hub maps every message to FHIR R4, links each patient across hospitals into one
golden record (master patient index) and serves the record over a FHIR REST API at <code>/fhir</code>.</p>
<dl>
{links}
</dl>
<p>Every endpoint except these pages, the CapabilityStatement and the SMART configuration needs a bearer
token (<code>Authorization: Bearer &hellip;</code>).</p>
<p class="v">hub {version}</p>
</body></html>
"""


@router.get("/")
def landing() -> HTMLResponse:
    links = "\n".join(
        f'<dt><a href="{escape(href)}">{escape(title)}</a></dt><dd>{escape(what)}</dd>'
        for href, title, what in LINKS
    )
    return HTMLResponse(LANDING.format(links=links, version=escape(__version__)))


@router.get("/docs")
def docs(request: Request) -> HTMLResponse:
    root = request.scope.get("root_path", "")
    return get_swagger_ui_html(
        openapi_url=f"{root}{request.app.openapi_url}",
        title="hub API reference",
        oauth2_redirect_url=f"{root}/docs/oauth2-redirect",
        swagger_js_url=f"{root}/docs/static/swagger-ui-bundle.js",
        swagger_css_url=f"{root}/docs/static/swagger-ui.css",
        swagger_favicon_url=f"{root}/docs/static/favicon.png",
        # Swagger UI would send the OpenAPI document to an online validator for its badge: not from here.
        swagger_ui_parameters={"validatorUrl": None},
    )


@router.get("/docs/oauth2-redirect")
def docs_oauth2_redirect() -> HTMLResponse:
    return get_swagger_ui_oauth2_redirect_html()


@router.get("/docs/static/{name}")
def docs_static(name: str) -> Response:
    if name not in ASSET_TYPES:
        raise NotFound(f"{name} is not a file of the API reference")
    return Response(
        (ASSETS / name).read_bytes(),
        media_type=ASSET_TYPES[name],
        headers={"Cache-Control": "public, max-age=86400"},
    )
