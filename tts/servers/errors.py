"""Every failure as OpenAI's error object, `{"error": {"message", "type", "param", "code"}}`,
so clients built for OpenAI report it as they would OpenAI's own; bad input is never a 500, and
no error closes the connection (a pooled client's next request reuses it)."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tts.errors import TTSError

log = logging.getLogger("tts.servers")

# HTTP status -> OpenAI error type
TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_error",
    499: "invalid_request_error",
}

# pydantic's error type -> OpenAI's error code
CODES = {"extra_forbidden": "unknown_parameter", "unsupported": "unsupported_parameter"}


class APIError(Exception):
    """An error answered as an OpenAI error object with this status."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.headers = headers

    def body(self) -> dict:
        kind = TYPES.get(self.status, "server_error")
        return {
            "error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}
        }

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def from_validation(error: ValidationError) -> APIError:
    """A 400 naming every rejected field; `param` is the first one, dotted (`messages.0.role`)."""
    problems = error.errors()
    params = [".".join(map(str, e["loc"])) for e in problems]
    messages = [
        "unknown field, not supported by this server"
        if e["type"] == "extra_forbidden"
        else e["msg"]
        for e in problems
    ]
    message = "; ".join(f"{p or 'body'}: {m}" for p, m in zip(params, messages))
    code = CODES.get(problems[0]["type"], "invalid_value")
    return APIError(400, message, param=params[0] or None, code=code)


class ContainBugs:
    """Answers an unexpected exception with a 500 error object and swallows it.

    Starlette's own handler for `Exception` re-raises after answering, and uvicorn then closes
    the connection, which breaks a pooled client's next request; this middleware sits inside
    it, so a bug is logged and answered like any other error. A bug after the response started
    (a stream) can only be logged: the stream itself reports its failures in-band.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def send_started(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_started)
        except Exception as error:
            log.exception("internal error on %s", scope.get("path"), exc_info=error)
            if scope["type"] == "http" and not started:
                bug = APIError(500, "internal server error", code="internal_error").response()
                await bug(scope, receive, send)


def install_handlers(app: FastAPI) -> None:
    """Route our errors, the framework's (unknown path, wrong method) and bugs to error objects."""

    async def api_error(request: Request, error: APIError) -> JSONResponse:
        return error.response()

    async def tts_error(request: Request, error: TTSError) -> JSONResponse:
        return APIError(400, str(error), code="invalid_value").response()

    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        return APIError(error.status_code, str(error.detail), headers=error.headers).response()

    app.add_exception_handler(APIError, api_error)
    app.add_exception_handler(TTSError, tts_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_middleware(ContainBugs)
