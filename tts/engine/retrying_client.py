"""JSON over HTTP to one server, retrying what may pass: the `remote` backend's transport.

A connection error, a 429 (too many requests) or a 5xx answer may pass, so the request is sent
again after a wait: the server's Retry-After when it gives one, else an exponential backoff with
jitter, so that concurrent callers spread their retries. Any other 4xx is the request's own
fault and raises at once, with the server's message.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import time

import httpx

from tts.errors import TTSError

MAX_BACKOFF_S = 30.0  # the longest wait between two attempts, Retry-After included


class ClientError(TTSError):
    """The server refused a request as malformed (a 4xx other than 429): not worth retrying."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason  # the server's own words


class RetryingClient:
    """Requests to the server at `url` (no trailing slash), over pooled connections.

    api_key: sent as `Authorization: Bearer`.
    max_connections: most HTTP connections open at once; more requests wait for one.
    retries: further attempts after a connection error, a 429 or a 5xx answer; before attempt
        k+1 it waits the server's Retry-After, else between half and all of `backoff * 2**k` s.
    timeout: seconds one attempt may take (connecting: at most 10).
    """

    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        max_connections: int = 64,
        retries: int = 4,
        timeout: float = 600.0,
        backoff: float = 0.5,
    ) -> None:
        self.url, self.api_key = url, api_key
        self.max_connections, self.retries = max_connections, retries
        self.timeout, self.backoff = timeout, backoff
        self._loop: asyncio.AbstractEventLoop | None = None
        self._http: httpx.AsyncClient | None = None

    async def request(self, method: str, path: str, body: dict | None = None) -> dict:
        """The JSON answer, after retrying what may pass; ClientError for a refused request,
        TTSError once the attempts are spent."""
        client, problem = self._client(), ""
        for attempt in range(self.retries + 1):
            wait = None
            try:
                response = await client.request(method, path, json=body)
            except httpx.TransportError as error:
                problem = f"{type(error).__name__} {error}".strip()
            else:
                if response.is_success:
                    try:
                        return response.json()
                    except ValueError:
                        raise TTSError(f"{self.url}{path}: answered with non-JSON") from None
                reason = _error_message(response)
                problem = f"HTTP {response.status_code}: {reason}"
                if response.status_code != 429 and response.status_code < 500:
                    raise ClientError(f"{self.url}{path}: {problem}", reason)
                wait = _retry_after(response)
            if attempt < self.retries:
                if wait is None:  # jitter, so that concurrent callers spread their retries
                    wait = self.backoff * 2**attempt * random.uniform(0.5, 1.0)
                await asyncio.sleep(min(wait, MAX_BACKOFF_S))
        raise TTSError(f"{self.url}{path}: {problem} (gave up after {self.retries + 1} attempts)")

    async def aclose(self) -> None:
        """Close the pooled connections of the current event loop's client."""
        if self._http is not None and self._loop is asyncio.get_running_loop():
            await self._http.aclose()
        self._loop = self._http = None

    def _client(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            # Pooled connections belong to the event loop that opened them, and each
            # asyncio.run makes a new one; the old loop's client goes with its loop.
            headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
            limits = httpx.Limits(
                max_connections=self.max_connections,
                max_keepalive_connections=self.max_connections,
            )
            self._http = httpx.AsyncClient(
                base_url=self.url,
                headers=headers,
                timeout=httpx.Timeout(self.timeout, connect=min(10.0, self.timeout)),
                limits=limits,
            )
            self._loop = loop
        return self._http


def _retry_after(response: httpx.Response) -> float | None:
    """The seconds a Retry-After header asks for (a number or an HTTP date), if any."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _error_message(response: httpx.Response) -> str:
    """The server's own words: OpenAI's error object, FastAPI's detail, or the body, one line."""
    try:
        data = response.json()
        message = data.get("error", {}).get("message") or data.get("detail") or data
    except (ValueError, AttributeError):
        message = response.text or response.reason_phrase
    return " ".join(str(message).split())[:300]
