"""The model: every request to the Messages API goes through :meth:`AnthropicModel.complete`.

The official ``anthropic`` SDK does the talking (it honours ``ANTHROPIC_API_KEY`` and
``ANTHROPIC_BASE_URL`` as it always does); its errors are translated here, at the edge,
into :class:`~vaultd.errors.ModelError` with one line a person can act on.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Protocol

import anthropic

from vaultd.errors import ModelError

NO_KEY = "no API key (set ANTHROPIC_API_KEY)"


@dataclass(frozen=True)
class ModelRequest:
    """One request: the context (the measure's input, or None) and the instruction.

    ``cache_context`` marks the context as a cacheable prompt prefix (several measures of a
    note read the same context); ``use_cache`` allows vaultd's own response cache.
    """

    model: str
    max_tokens: int
    prompt: str
    context: str | None = None
    cache_context: bool = False
    use_cache: bool = True


@dataclass(frozen=True)
class ModelReply:
    text: str
    input_tokens: int = 0
    output_tokens: int = 0
    stop_reason: str | None = None
    cache_read_tokens: int = 0  # billed at the API's cache-read price
    cache_write_tokens: int = 0
    model: str = ""
    from_cache: bool = False  # served by vaultd's response cache: nothing was billed


def request_params(request: ModelRequest) -> dict[str, Any]:
    """The exact Messages API parameters for ``request``: what decides the reply."""
    content: list[dict[str, Any]] = []
    if request.context is not None:
        text = f"<context>\n{request.context}\n</context>"
        block: dict[str, Any] = {"type": "text", "text": text}
        if request.cache_context:
            block["cache_control"] = {"type": "ephemeral"}
        content.append(block)
    content.append({"type": "text", "text": request.prompt})
    return {
        "model": request.model,
        "max_tokens": request.max_tokens,
        "messages": [{"role": "user", "content": content}],
    }


class Model(Protocol):
    """Anything that can answer a :class:`ModelRequest`."""

    def complete(self, request: ModelRequest) -> ModelReply: ...


def credentials_problem() -> str | None:
    """None when the SDK finds a key, token or profile here; else what is missing or wrong."""
    try:
        client = anthropic.Anthropic()
    except anthropic.AnthropicError as exc:
        return f"no usable API credentials: {' '.join(str(exc).split())}"
    try:
        found = client.api_key or client.auth_token or client.credentials
        return None if found else NO_KEY
    finally:
        client.close()


class NoKeyModel:
    """Stands in when there is no API key: every request fails with the same clear line."""

    def __init__(self, problem: str = NO_KEY) -> None:
        self.problem = problem

    def complete(self, request: ModelRequest) -> ModelReply:
        raise ModelError(self.problem)


class AnthropicModel:
    """The Messages API through the official SDK; one client, shared by every thread."""

    def __init__(self, *, max_retries: int = 2, timeout: float = 120.0) -> None:
        self._client = anthropic.Anthropic(max_retries=max_retries, timeout=timeout)
        self._auth_failed: str | None = None
        self._lock = threading.Lock()

    def close(self) -> None:
        self._client.close()

    def complete(self, request: ModelRequest) -> ModelReply:
        return self.send(request_params(request))

    def send(self, params: dict[str, Any]) -> ModelReply:
        """One Messages API call with ``params``: the only place vaultd reaches the network."""
        if self._auth_failed:  # a bad key fails once, not once per measure
            raise ModelError(self._auth_failed)
        try:
            message = self._client.messages.create(**params)
        except anthropic.AuthenticationError as exc:
            with self._lock:
                self._auth_failed = f"the API key was refused (401): {_message(exc)}"
            raise ModelError(self._auth_failed) from exc
        except anthropic.APIStatusError as exc:
            raise ModelError(f"model API error {exc.status_code}: {_message(exc)}") from exc
        except anthropic.APITimeoutError as exc:
            raise ModelError("the model API did not answer in time") from exc
        except anthropic.APIConnectionError as exc:
            cause = exc.__cause__ or exc
            raise ModelError(f"cannot reach the model API: {cause}") from exc
        except anthropic.AnthropicError as exc:
            raise ModelError(f"model request failed: {exc}") from exc
        text = "".join(block.text for block in message.content if block.type == "text")
        usage = message.usage
        return ModelReply(
            text=text,
            input_tokens=usage.input_tokens if usage else 0,
            output_tokens=usage.output_tokens if usage else 0,
            stop_reason=message.stop_reason,
            cache_read_tokens=(usage.cache_read_input_tokens or 0) if usage else 0,
            cache_write_tokens=(usage.cache_creation_input_tokens or 0) if usage else 0,
            model=message.model or str(params.get("model", "")),
        )


def _message(exc: anthropic.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return " ".join(error["message"].split())
    return " ".join(str(exc.message).split())
