"""The master patient index: pure scoring (match.py) and the service that resolves, links and merges.

- ``hub.mpi.match``: features of a FHIR Patient, blocking keys, ``compare`` → match / possible / no-match,
  ``MatchConfig`` (thresholds, weights, placeholder patterns, twin gate), ``estimate_weights`` (weights
  from a deployment's own unlabelled records). No database, no web framework.
- ``hub.mpi.service``: ``resolve_identities`` (called by the pipeline), ``find_candidates`` (``$match``),
  steward decisions ``link`` / ``unlink`` / ``decide_review`` / ``undo``, HL7 ``merge``,
  ``linked_patient_ids`` (every Patient id of one person, for compartment queries such as ``$everything``),
  ``MpiSettings`` (match config and sender trust).
- ``hub.mpi.router``: ``router`` with ``POST /fhir/Patient/$match``, ``GET /fhir/Patient/$ihe-pix`` and the
  review queue under ``/mpi/review`` (JSON, plus ``/mpi/review/page``); its ``get_session`` dependency is
  meant to be overridden by the application's.
"""
