"""JSON errors: every refusal a service makes has a stable `error` code and a human `detail`."""

from __future__ import annotations

from http import HTTPStatus

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse


class BadRequest(Exception):
    """A request the service will not serve; becomes a JSON error naming the culprit."""

    def __init__(self, status: int, error: str, detail: str, **fields: object) -> None:
        super().__init__(detail)
        self.status = status
        self.body = {"error": error, "detail": detail, **fields}


def json_error(status: int, error: str, detail: str, **fields: object) -> JSONResponse:
    """A JSON error body: a stable machine-readable `error`, a human `detail`, context fields."""
    return JSONResponse({"error": error, "detail": detail, **fields}, status_code=status)


async def bad_request_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, BadRequest)
    return JSONResponse(exc.body, status_code=exc.status)


# Starlette's refusals carry only the status phrase; these say what it means here.
_DETAILS = {
    404: "nothing is served at this path on this port",
    405: "this path does not take that method",
}


async def http_exception_handler(request: Request, exc: Exception) -> JSONResponse:
    """Starlette's own refusals (no such route: 404, wrong method: 405) as JSON errors too."""
    assert isinstance(exc, HTTPException)
    try:
        phrase = HTTPStatus(exc.status_code).phrase
    except ValueError:
        phrase = "HTTP error"
    error = phrase.lower().replace(" ", "_").replace("-", "_")
    detail = _DETAILS.get(exc.status_code, exc.detail) if exc.detail == phrase else exc.detail
    return JSONResponse(
        {"error": error, "detail": detail}, status_code=exc.status_code, headers=exc.headers
    )


# Starlette(exception_handlers=EXCEPTION_HANDLERS): a raised BadRequest becomes its JSON
# answer, and so does Starlette's 404 for a path that no route of this listener serves.
EXCEPTION_HANDLERS = {BadRequest: bad_request_handler, HTTPException: http_exception_handler}
