"""Persistence: ORM models and the SQL that reads and writes them."""

# Every write to the resource store maintains the search index, whoever writes (pipeline, API, CLI).
from hub.stats import upkeep as _stats_upkeep  # noqa: F401  (the statistics facts: a write hook)
from hub.store import search_index as _search_index  # noqa: F401
