"""What a measure asks a model, what comes back, and the protocol a model client follows.

Pure values and a protocol: the clients (:mod:`vaultd.edges.model`, the cache and the
batches beside it) implement :class:`Model`; the runner only ever sees this protocol.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


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
    # One draw of several from the same request (a panel's ``run/assistant/sample``):
    # requests that differ only by it are distinct, never merged by the response cache or
    # by in-flight deduplication. It is not sent.
    sample: str | None = None
    system: str | None = None  # a system prompt (an assistant's ``system`` setting)


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
    batch: bool = False  # answered through the Message Batches API: billed at half price


class Model(Protocol):
    """Anything that can answer a :class:`ModelRequest`."""

    def complete(self, request: ModelRequest) -> ModelReply: ...

    def unavailable(self, model: str | None = None) -> str | None:
        """Why no request can be made now (no key, a refused key, the API unreachable), or
        None when one may be tried; with ``model``, a request to that model (or assistant:
        each may have a provider of its own)."""
        ...

    def answering(self) -> bool:
        """Whether the API has answered a request since the start or its last outage."""
        ...


class Deferred(Exception):
    """The model took the request for a later round (a batch); the measure waits for it."""
