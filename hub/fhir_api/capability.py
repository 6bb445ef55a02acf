"""The CapabilityStatement served at ``/fhir/metadata``, generated from the search-parameter table so
that it lists exactly what the server does."""

from __future__ import annotations

from functools import lru_cache

import orjson

from hub import __version__
from hub.store.search_params import COMPOSITE, REGISTRY, SPECIAL

_SPECIAL_TYPES = {"_id": "token", "_lastUpdated": "date"}
_RESOURCE_INTERACTIONS = ["read", "vread", "history-instance", "history-type", "search-type"]
_WRITE_INTERACTIONS = ["create", "update", "delete"]


@lru_cache(maxsize=4)
def capability_statement(base: str) -> bytes:
    resources = []
    for rtype, entry in sorted(REGISTRY.items()):
        params = []
        for p in entry.params.values():
            ptype = _SPECIAL_TYPES[p.name] if p.type == SPECIAL else p.type
            item = {"name": p.name, "type": ptype}
            if p.type == COMPOSITE:
                item["documentation"] = "components: " + ", ".join(p.components)
            params.append(item)
        includes = sorted(f"{rtype}:{p.name}" for p in entry.params.values() if p.type == "reference")
        revincludes = sorted(
            f"{other}:{p.name}"
            for other, oentry in REGISTRY.items()
            for p in oentry.params.values()
            if p.type == "reference" and (not p.targets or rtype in p.targets)
        )
        resource: dict[str, object] = {
            "type": rtype,
            "interaction": [{"code": c} for c in _RESOURCE_INTERACTIONS + _WRITE_INTERACTIONS],
            "versioning": "versioned",
            "readHistory": True,
            "updateCreate": True,
            "conditionalCreate": True,
            "conditionalUpdate": True,
            "conditionalRead": "modified-since",
            "conditionalDelete": "not-supported",
            "searchInclude": ["*", *includes],
            "searchRevInclude": revincludes,
            "searchParam": params,
        }
        if rtype == "Patient":
            resource["operation"] = [
                {
                    "name": "everything",
                    "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything",
                }
            ]
        resources.append(resource)
    statement = {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-29",
        "publisher": "the hub",
        "kind": "instance",
        "software": {"name": "hub", "version": __version__},
        "implementation": {"description": "HL7 v2 to FHIR R4 integration hub", "url": base},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "rest": [
            {
                "mode": "server",
                "documentation": (
                    "Search: token system|code, |code, system|, :not, :text, :of-type; string :exact, :contains; "
                    "date prefixes eq ne lt gt le ge sa eb ap; reference by id, Type/id, :Type, :identifier and one "
                    "level of chaining; quantity and number with prefixes and units; uri :below, :above; "
                    ":missing on every type; composite parameters; _has (one level); _include and "
                    "_revinclude with :iterate; _sort, _count, _summary (true, text, data, count), "
                    "_elements, _total. Paging links are keyset cursors. Unknown parameters are ignored "
                    "and reported unless Prefer: handling=strict. Patient compartment search: "
                    "Patient/{id}/{type}; on a golden Patient it covers every linked source."
                ),
                "security": {
                    "cors": False,
                    "service": [
                        {
                            "coding": [
                                {
                                    "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                                    "code": "SMART-on-FHIR",
                                }
                            ]
                        }
                    ],
                    "description": (
                        "Authorization: Bearer JWT (the hub's own: `hub token`, or client credentials at "
                        "/auth/token; or the configured OpenID provider's); SMART v2 scopes within each "
                        "role's ceiling; see /.well-known/smart-configuration. AuditEvent: the audit trail, "
                        "admins only (patient, agent, date, type, subtype, outcome, entity, purpose)."
                    ),
                },
                "resource": resources,
                "interaction": [{"code": "transaction"}, {"code": "batch"}, {"code": "history-system"}],
                "operation": [
                    {
                        "name": "everything",
                        "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything",
                    }
                ],
            }
        ],
    }
    return orjson.dumps(statement)
