"""JSON errors: every refusal a service makes has a stable `error` code and a human `detail`."""

from __future__ import annotations

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


# Starlette(exception_handlers=EXCEPTION_HANDLERS): a raised BadRequest becomes its JSON answer.
EXCEPTION_HANDLERS = {BadRequest: bad_request_handler}
