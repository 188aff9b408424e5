"""Backfills through the Message Batches API: half the price, no rate-limit pressure.

``vaultd run VAULT --once --batch`` processes the pending notes in rounds. In each round
every note runs as far as it can: programmatic measures run at once, and each model
request is answered from this run's batches or the response cache, or deferred. The
deferred requests of all notes go out as one batch; when it has ended its replies are
stored in the cache, and the next round picks them up. One round per level of the
measure graph (plus one for missing answers).

Submitted batches are recorded in ``VAULT/.vaultd/batches.json`` before they are waited
on, so a run that is stopped and started again collects them instead of paying twice.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from vaultd.edges.cache import ResponseCache, worth_storing
from vaultd.edges.model import MALFORMED, AnthropicModel, request_params
from vaultd.edges.writer import write_whole
from vaultd.errors import ModelError, ModelUnavailable, one_line
from vaultd.evaluate.ask import Deferred, ModelReply, ModelRequest

if TYPE_CHECKING:
    import anthropic

log = logging.getLogger("vaultd.batch")
_T = TypeVar("_T")

STATE_FILE = Path(".vaultd") / "batches.json"


class BatchModel:
    """A model whose replies come from this run's batches or the cache; others are deferred."""

    def __init__(self, cache: ResponseCache) -> None:
        self.cache = cache
        self._fresh: dict[str, ModelReply] = {}  # this run's batch replies, not yet used
        self._failed: dict[str, str] = {}  # key -> why the batch could not answer it
        self._wanted: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self.outage: str | None = None  # why no request can be made: notes that ask wait

    def complete(self, request: ModelRequest) -> ModelReply:
        params = request_params(request)
        key = ResponseCache.key_of(request, params)
        with self._lock:
            if key in self._failed:
                raise ModelError(self._failed[key])
            if key in self._fresh:  # this run's reply: the note it is for pays its share
                return self._fresh[key]
        cached = self.cache.get(key) if request.use_cache else None
        if cached is not None:
            return cached
        with self._lock:
            self._wanted[key] = params
        raise Deferred

    def unavailable(self, model: str | None = None) -> str | None:
        # found by :meth:`Batches.probe` before the first pass; a batch that cannot be
        # submitted later on fails its requests, as it says
        return self.outage

    def answering(self) -> bool:
        return True

    def take_wanted(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            wanted, self._wanted = self._wanted, {}
        return wanted

    def answered(self, key: str, reply: ModelReply) -> None:
        with self._lock:
            self._fresh[key] = reply

    def failed(self, key: str, why: str) -> None:
        with self._lock:
            self._failed[key] = why


class Batches:
    """Submits batches, records them, waits for them and files their replies.

    Every call goes through ``client``, the one :class:`~vaultd.edges.model.AnthropicModel` of the
    run: the same retries (``model_retries``), deadline (``model_timeout``), rate gate and
    outage rule as single requests, and the same words for its errors."""

    def __init__(self, vault: Path, cache: ResponseCache, model: BatchModel,
                 client: AnthropicModel, *, poll_interval: float = 10.0,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.state_path = vault / STATE_FILE
        self.cache = cache
        self.model = model
        self.client = client
        self.poll_interval = poll_interval
        self.sleep = sleep
        self.submitted = 0
        self.resumed = 0

    def _call(self, use: Callable[[anthropic.Anthropic], _T]) -> _T:
        """One SDK call through the shared client; its errors as a :class:`ModelError`
        (a batch the API no longer knows stays ``anthropic.NotFoundError``)."""
        import anthropic  # here: the SDK takes a second to import

        try:
            return self.client.call(use)
        except anthropic.NotFoundError:
            raise
        except anthropic.AnthropicError as exc:
            raise self.client.error_for(exc) from exc

    def probe(self, model: str) -> str | None:
        """Before anything is deferred: can a request be made at all (the key accepted, the
        API reached)? One ``count_tokens`` call, which costs nothing; when the answer is an
        outage (a refused key, no connection), every note that asks the model waits,
        untouched, as it would without ``--batch``. Returns why, or None."""
        import anthropic

        messages: Any = [{"role": "user", "content": "ping"}]
        try:
            self._call(lambda client: client.messages.count_tokens(model=model,
                                                                   messages=messages))
        except ModelUnavailable as exc:
            self.model.outage = str(exc)
        except (anthropic.AnthropicError, ModelError):
            pass  # not an outage: the batch itself will say what is wrong
        return self.model.outage

    def _fail(self, key: str, why: str) -> None:
        """A request's error, as the note will show it: never with the API key in it."""
        self.model.failed(key, self.client.redacted(why))

    # -- the record of submitted batches ---------------------------------------------

    def _load(self) -> list[dict[str, Any]]:
        try:
            data = json.loads(self.state_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            log.warning("%s: unreadable (%s); starting without it", self.state_path, exc)
            return []
        batches = data.get("batches") if isinstance(data, dict) else None
        return [b for b in batches or [] if isinstance(b, dict) and isinstance(b.get("id"), str)]

    def _save(self, batches: list[dict[str, Any]]) -> None:
        self.state_path.parent.mkdir(mode=0o700, exist_ok=True)
        write_whole(self.state_path, json.dumps({"batches": batches}).encode("utf-8"))

    # -- rounds ----------------------------------------------------------------------

    def resume(self) -> int:
        """Collect every batch an earlier run submitted and did not collect."""
        pending = self._load()
        for record in list(pending):
            log.info("resuming batch %s (%d requests)", record["id"], len(record.get("keys", {})))
            self._collect(record)
            self.resumed += 1
            pending.remove(record)
            self._save(pending)
        return self.resumed

    def run_round(self) -> int:
        """Send what the last pass deferred as one batch, wait for it, file the replies."""
        import anthropic

        wanted = self.model.take_wanted()
        if not wanted:
            return 0
        requests: Any = [{"custom_id": key, "params": params} for key, params in wanted.items()]
        try:
            batch = self._call(lambda client: client.messages.batches.create(requests=requests))
        except (anthropic.AnthropicError, ModelError) as exc:
            why = f"could not submit the batch: {one_line(str(exc), 300)}"
            for key in wanted:
                self._fail(key, why)
            return len(wanted)
        record = {"id": batch.id, "keys": {key: params["model"] for key, params in wanted.items()},
                  "submitted": time.time()}
        records = self._load()
        records.append(record)
        self._save(records)  # before waiting: a stopped run resumes this batch
        self.submitted += 1
        log.info("batch %s: %d requests submitted", batch.id, len(requests))
        self._collect(record)
        self._save([r for r in self._load() if r["id"] != batch.id])
        return len(wanted)

    def _collect(self, record: dict[str, Any]) -> None:
        import anthropic

        batch_id = record["id"]
        models: dict[str, str] = record.get("keys", {})
        try:
            while True:
                batch = self._call(lambda client: client.messages.batches.retrieve(batch_id))
                if batch.processing_status == "ended":
                    break
                self.sleep(self.poll_interval)
            entries = self._call(lambda client: list(client.messages.batches.results(batch_id)))
            for entry in entries:
                self._file(entry, models)
        except anthropic.NotFoundError:
            log.warning("batch %s is no longer known to the API; its requests will be asked "
                        "again", batch_id)
        except (anthropic.AnthropicError, ModelError) as exc:
            why = f"the batch failed: {one_line(str(exc), 300)}"
            for key in models:
                self._fail(key, why)

    def _file(self, entry: Any, models: dict[str, str]) -> None:
        key = entry.custom_id
        result = entry.result
        if result.type == "succeeded":
            try:  # read as a single reply is read: the same checks, the key redacted
                reply = dataclasses.replace(
                    self.client.reply_of(result.message, models.get(key, "")), batch=True)
            except ValueError as exc:
                self._fail(key, f"{MALFORMED}: {exc}")
                return
            if worth_storing(reply):  # the one rule: no refusal, no cut-off reply, no blank
                self.cache.put(key, models.get(key, reply.model), reply)
            self.model.answered(key, reply)
        elif result.type == "errored":
            error = getattr(result, "error", None)
            inner = getattr(error, "error", error)
            message = getattr(inner, "message", None) or str(inner)
            self._fail(key, f"the batch could not answer: {one_line(str(message), 300)}")
        else:  # canceled or expired: ask again in a later run
            self.model.failed(key, f"the batch request was {result.type}; set the note to "
                                   "Pending again")

