"""A small JSON-over-HTTP client for inference servers, with timeouts and one-line errors.

Every failure a user can fix (server not running, wrong URL, server error, a request that takes
longer than the timeout, an answer that is not JSON) becomes an ``EngineError`` whose message says
what happened and what to do; the CLI prints it as one line and exits 2.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import requests

from workbench.errors import ParameterError, WorkbenchError


class EngineError(WorkbenchError):
    """An inference server cannot be reached, answers with an error, or answers without routing."""


class EngineParameterError(EngineError, ParameterError):
    """An ``EngineError`` whose message names Python parameters (``{timeout}``); a CLI words them as flags."""


def _server_message(resp: requests.Response) -> str:
    """The error text a vLLM/SGLang server put in its body (OpenAI-style ``{"error": ...}``), short."""
    try:
        body = resp.json()
    except ValueError:
        text = resp.text.strip().replace("\n", " ")
        return text[:300]
    if isinstance(body, dict):
        err = body.get("error", body.get("detail", body.get("message", body)))
        if isinstance(err, dict):
            err = err.get("message", err)
        return str(err)[:300]
    return str(body)[:300]


@dataclass
class EngineClient:
    """POST/GET JSON to one server.

    Parameters
    ----------
    url : str
        Base URL of the server, e.g. ``http://127.0.0.1:8000`` (no path).
    engine : str
        "vllm" or "sglang"; used in messages only.
    timeout : float
        Seconds to wait for an answer (per request). Long generations need a generous value.
    connect_timeout : float
        Seconds to wait for the TCP connection.
    """

    url: str
    engine: str
    timeout: float = 600.0
    connect_timeout: float = 10.0

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise EngineError(f"url {self.url!r} is not an HTTP URL: give e.g. http://127.0.0.1:8000", param="url")
        self.url = self.url.rstrip("/")
        self._session = requests.Session()

    def close(self) -> None:
        self._session.close()

    def get_json(self, path: str) -> Any:
        return self._call("GET", path, None)

    def post_json(self, path: str, payload: dict[str, Any]) -> Any:
        return self._call("POST", path, payload)

    def _call(self, method: str, path: str, payload: dict[str, Any] | None) -> Any:
        where = f"{self.url}{path}"
        try:
            resp = self._session.request(method, where, json=payload, timeout=(self.connect_timeout, self.timeout))
        except requests.exceptions.ConnectTimeout as err:
            raise EngineParameterError(
                f"{self.engine} server at {self.url} did not accept a connection within "
                f"{self.connect_timeout:g} s: check {{url}} and that the server is up",
                "url",
            ) from err
        except requests.exceptions.ReadTimeout as err:
            raise EngineParameterError(
                f"{self.engine} server at {self.url} did not answer {method} {path} within {self.timeout:g} s: "
                "raise {timeout} or lower {max_new_tokens}",
                "timeout",
                "max_new_tokens",
            ) from err
        except requests.exceptions.ConnectionError as err:
            raise EngineParameterError(
                f"cannot reach the {self.engine} server at {self.url} ({type(err).__name__}): start it with "
                "--enable-return-routed-experts (see docs/engines.md) or fix {url}",
                "url",
            ) from err
        except requests.exceptions.RequestException as err:
            raise EngineError(f"{method} {where} failed: {err}") from err
        if resp.status_code == 404:
            raise EngineParameterError(
                f"{self.engine} server at {self.url} has no {path} endpoint (HTTP 404): is {{engine}} right "
                "for this server?",
                "engine",
            )
        if resp.status_code >= 400:
            raise EngineError(
                f"{self.engine} server at {self.url} answered {method} {path} with HTTP {resp.status_code}: "
                f"{_server_message(resp)}"
            )
        try:
            return resp.json()
        except ValueError as err:
            raise EngineError(
                f"{self.engine} server at {self.url} answered {method} {path} with something that is not JSON "
                f"(content-type {resp.headers.get('content-type')!r})"
            ) from err
