"""Which provider answers a request: the vault's Anthropic model, or a configured assistant.

A request's ``model`` is a model name or the name of an assistant of ``config.toml``
(``[assistants.NAME]``). :class:`Assistants` sends a configured assistant's requests to
its own client (the ``openai`` SDK for ``provider = "openai"``, an Anthropic client of its
own for another URL or key), with its model, its system prompt and its own limit on
requests in flight, through the response cache under its endpoint's name; every other
request goes to the vault's model as before. A client is made on the first request that
needs it, so a provider no note uses is never imported.

It counts, per assistant, the requests sent, those that failed and what they cost, for
``vaultd status``.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from vaultd.config import Assistant, Price
from vaultd.edges.cache import CachedModel, ResponseCache
from vaultd.errors import ModelError, ModelUnavailable
from vaultd.evaluate.ask import Model, ModelReply, ModelRequest
from vaultd.evaluate.cost import Usage

log = logging.getLogger("vaultd.assistants")


class Client(Protocol):
    """A provider's client (:class:`~vaultd.edges.model.AnthropicModel`,
    :class:`~vaultd.edges.openai_model.OpenAIModel`)."""

    def params(self, request: ModelRequest) -> dict[str, Any]: ...

    def send(self, params: dict[str, Any]) -> ModelReply: ...

    def complete(self, request: ModelRequest) -> ModelReply: ...

    def unavailable(self, model: str | None = None) -> str | None: ...

    def answering(self) -> bool: ...

    def close(self) -> None: ...


class MissingKey:
    """The client of an assistant whose key variable is not set: every request waits."""

    def __init__(self, why: str) -> None:
        self.why = why

    def params(self, request: ModelRequest) -> dict[str, Any]:
        return {"model": request.model}

    def send(self, params: dict[str, Any]) -> ModelReply:
        raise ModelUnavailable(self.why)

    def complete(self, request: ModelRequest) -> ModelReply:
        raise ModelUnavailable(self.why)

    def unavailable(self, model: str | None = None) -> str | None:
        return self.why

    def answering(self) -> bool:
        return False

    def close(self) -> None:
        pass


@dataclasses.dataclass
class Tally:
    """One assistant's requests: sent (not from the cache), failed, and their usage."""

    requests: int = 0
    errors: int = 0
    usage: Usage = dataclasses.field(default_factory=Usage)


def endpoint(assistant: Assistant) -> str:
    """Where an assistant's requests go, for the cache key: provider and URL."""
    return f"{assistant.provider} {assistant.base_url or ''}".strip()


def shares_default(assistant: Assistant) -> bool:
    """Whether an assistant is the vault's own Anthropic API with another model: its
    requests go through the vault's client (and its batches)."""
    return (assistant.provider == "anthropic" and not assistant.base_url
            and assistant.api_key_env == "ANTHROPIC_API_KEY")


class Assistants:
    """A :class:`~vaultd.evaluate.ask.Model` that routes each request by its ``model``."""

    def __init__(self, default: Model, configured: Mapping[str, Assistant],
                 make_client: Callable[[str, Assistant], Client],
                 cache: ResponseCache | None, prices: Mapping[str, Price]) -> None:
        self.default = default
        self.configured = dict(configured)
        self.make_client = make_client
        self.cache = cache
        self.prices = dict(prices)
        self.tallies: dict[str, Tally] = {}
        self._clients: dict[str, tuple[Client, Model, threading.BoundedSemaphore | None]] = {}
        self._lock = threading.Lock()

    def _client(self, name: str, assistant: Assistant
                ) -> tuple[Client, Model, threading.BoundedSemaphore | None]:
        with self._lock:
            made = self._clients.get(name)
            if made is None:
                client = self.make_client(name, assistant)
                model: Model = client
                if self.cache is not None:
                    model = CachedModel(client, self.cache, endpoint(assistant))
                slots = (threading.BoundedSemaphore(assistant.concurrency)
                         if assistant.concurrency else None)
                made = self._clients[name] = (client, model, slots)
            return made

    def resolved(self, request: ModelRequest) -> ModelRequest:
        """The request as its assistant sends it: its model, its system prompt."""
        assistant = self.configured.get(request.model)
        if assistant is None:
            return request
        return dataclasses.replace(request, model=assistant.model,
                                   system=request.system or assistant.system)

    def complete(self, request: ModelRequest) -> ModelReply:
        name = request.model
        assistant = self.configured.get(name)
        if assistant is None or shares_default(assistant):
            return self._counted(name, self.default, self.resolved(request), None)
        _, model, slots = self._client(name, assistant)
        return self._counted(name, model, self.resolved(request), slots)

    def _counted(self, name: str, model: Model, request: ModelRequest,
                 slots: threading.BoundedSemaphore | None) -> ModelReply:
        tally = self._tally(name)
        try:
            if slots is None:
                reply = model.complete(request)
            else:
                with slots:
                    reply = model.complete(request)
        except (ModelError, ModelUnavailable):
            with self._lock:
                tally.errors += 1
            raise
        if not reply.from_cache:
            with self._lock:
                tally.requests += 1
            tally.usage.add(reply, self.prices)
        return reply

    def _tally(self, name: str) -> Tally:
        with self._lock:
            return self.tallies.setdefault(name, Tally())

    def unavailable(self, model: str | None = None) -> str | None:
        assistant = self.configured.get(model) if model is not None else None
        if assistant is None or shares_default(assistant):
            return self.default.unavailable(model)
        assert model is not None
        return self._client(model, assistant)[1].unavailable(model)

    def answering(self) -> bool:
        return self.default.answering()

    def close(self) -> None:
        """Close the assistants' own clients (the vault's model is its owner's to close)."""
        with self._lock:
            clients, self._clients = dict(self._clients), {}
        for client, _, _ in clients.values():
            client.close()
