"""Ministry statistics: aggregates maintained as messages are processed (``upkeep``), queried by the
``/stats`` routes (``query``, ``router``), published as FHIR MeasureReports (``measure``) and DHIS2 data
values (``dhis2``)."""

# The store first: it installs this package's write hook (hub.stats.upkeep) as it loads, and upkeep's
# models need the store's declarative base.
import hub.store  # noqa: F401
