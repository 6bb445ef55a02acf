"""The hub's expected errors. Each carries a stable ``code`` and the HTTP status it maps to.

HubError
 ├── NotFound            404
 ├── Gone                410
 ├── BadRequest          400
 │    └── InvalidHL7     400  (carries an HL7 table 0357 code and an ERR-2 location)
 ├── Unauthorized        401
 ├── Forbidden           403
 ├── Conflict            409
 ├── NotAcceptable       406
 ├── PreconditionFailed  412
 ├── PayloadTooLarge     413
 ├── Unprocessable       422
 └── ProcessingError     500  (a message that could not be processed; kept as data, replayable)
      ├── MappingError        (no map, or a map that cannot be applied)
      └── IdentityError       (the MPI could not resolve the patient)
"""

from __future__ import annotations


class HubError(Exception):
    code = "error"
    http_status = 500

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class NotFound(HubError):
    code = "not-found"
    http_status = 404


class Gone(HubError):
    code = "deleted"
    http_status = 410


class BadRequest(HubError):
    code = "invalid"
    http_status = 400


class Unauthorized(HubError):
    code = "login"
    http_status = 401


class Forbidden(HubError):
    code = "forbidden"
    http_status = 403


class Conflict(HubError):
    code = "conflict"
    http_status = 409


class NotAcceptable(HubError):
    code = "not-supported"
    http_status = 406


class PayloadTooLarge(HubError):
    code = "too-costly"
    http_status = 413


class PreconditionFailed(HubError):
    code = "precondition-failed"
    http_status = 412


class Unprocessable(HubError):
    code = "processing"
    http_status = 422


class ProcessingError(HubError):
    code = "processing-error"


class MappingError(ProcessingError):
    code = "mapping-error"


class IdentityError(ProcessingError):
    code = "identity-error"
