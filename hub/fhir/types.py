"""Which names are FHIR R4B resource types (``/fhir/Foo`` is an unknown type, not an empty search)."""

from __future__ import annotations

from functools import lru_cache

_ABSTRACT = frozenset({"Resource", "DomainResource"})


@lru_cache(maxsize=512)
def is_resource_type(name: str) -> bool:
    """True for the concrete resource types of FHIR R4B (Patient, Observation, Bundle, …)."""
    if name in _ABSTRACT or not name[:1].isupper() or not name.isalpha():
        return False
    from fhir.resources.R4B import get_fhir_model_class
    from fhir.resources.R4B.resource import Resource

    try:
        cls = get_fhir_model_class(name)
    except (ValueError, ImportError, AttributeError):
        return False
    return isinstance(cls, type) and issubclass(cls, Resource) and cls.__name__ == name
