"""A real HTTP server that speaks the OpenAI Chat Completions wire format.

The second instance of :class:`~tests.fakeapi.FakeMessagesAPI`'s machinery (its
:class:`~tests.fakeapi.Reply` scripts, rules, delays, drops, cuts, trickles, ``retry-after``
headers, ``accepted_keys``, request records), answering ``POST /v1/chat/completions`` as
OpenAI, Ollama, vLLM and the like do. Tests point the real ``openai`` SDK (through
:class:`vaultd.edges.openai_model.OpenAIModel`) at ``api.base_url``; nothing is mocked::

    with FakeChatCompletionsAPI() as api:
        api.rule("capital of France", "Paris")
        api.script([Reply(status=429, headers={"retry-after": "0"}), "ok"])

A reply's ``stop_reason`` may be given in either vocabulary: ``end_turn`` / ``max_tokens`` /
``refusal`` are sent as ``stop`` / ``length`` / ``content_filter``; others as they are.

Stdlib only.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from .fakeapi import FakeMessagesAPI, Reply, Request, estimate_tokens

__all__ = ["FakeChatCompletionsAPI", "Reply", "Request"]

# (type, code, message) of the errors OpenAI sends, by status
_ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("permission_error", "unsupported_country_region_territory",
          "Country, region, or territory not supported."),
    404: ("invalid_request_error", "model_not_found", "The model does not exist."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests."),
    500: ("server_error", None, "The server had an error while processing your request."),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
}

FINISH_REASONS = {"end_turn": "stop", "max_tokens": "length", "refusal": "content_filter"}


class FakeChatCompletionsAPI(FakeMessagesAPI):
    """A threaded HTTP/1.1 server on 127.0.0.1 that answers like an OpenAI-compatible API.

    ``url`` is the server's root; ``base_url`` (``url + "/v1"``) is what the SDK is given.
    A 401 (a key not in ``accepted_keys``) quotes the key sent back in its message, whole,
    as a careless proxy would: whatever sends it on must take it out."""

    messages_path = "/v1/chat/completions"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def completion_requests(self) -> list[Request]:
        """The recorded ``POST /v1/chat/completions`` requests."""
        return self.message_requests()

    def _error_json(self, status: int, message: str | None, request_id: str,
                    request: Request) -> dict[str, Any]:
        kind, code, usual = _ERRORS.get(status, ("server_error", None, "Internal server error"))
        if status == 401 and message is None:
            usual = f"Incorrect API key provided: {request.api_key}."
        return {"error": {"message": message or usual, "type": kind, "param": None,
                          "code": code}}

    def _success_json(self, request: Request, reply: Reply) -> dict[str, Any]:
        text = reply.text or ""
        prompt = estimate_tokens(request.text)
        completion = max(1, len(text) // 4)
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request.model or "gpt-fake",
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": None,
                "finish_reason": FINISH_REASONS.get(reply.stop_reason, reply.stop_reason),
            }],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                      "total_tokens": prompt + completion},
        }

    def _ratelimit_headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        for kind, limit in (("requests", 10000), ("tokens", 2000000)):
            headers[f"x-ratelimit-limit-{kind}"] = str(limit)
            headers[f"x-ratelimit-remaining-{kind}"] = str(limit - 1)
            headers[f"x-ratelimit-reset-{kind}"] = "6ms"
        return headers
