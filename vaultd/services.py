"""The effects, built once from the settings and closed together.

The model client, the JavaScript sandbox, the writer and the threads measures run on are
the only parts of vaultd that touch the world; this is where they are made.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from vaultd.config import Settings
from vaultd.engine import Engine, EngineOptions
from vaultd.model import AnthropicModel, Model, NoKeyModel, has_credentials
from vaultd.runner import Effects
from vaultd.sandbox import Sandbox, SandboxLimits
from vaultd.writer import Recovery, Writer

log = logging.getLogger("vaultd.services")


@dataclass
class Services:
    engine: Engine
    writer: Writer
    has_key: bool
    recovered: list[Recovery]


@contextmanager
def open_services(vault: Path, settings: Settings) -> Iterator[Services]:
    """Everything the engine needs for ``vault``; the journal is recovered first."""
    writer = Writer(vault)
    recovered = writer.recover()
    for item in recovered:
        log.warning("journal: %s: %s %s", item.path, item.outcome, item.detail)
    has_key = has_credentials()
    model: Model = (
        AnthropicModel(max_retries=settings.model_retries, timeout=settings.model_timeout)
        if has_key
        else NoKeyModel()
    )
    sandbox = Sandbox(
        workers=settings.js_workers,
        limits=SandboxLimits(
            time_limit=settings.js_time_limit,
            memory_limit=settings.js_memory_limit_mb * 1024 * 1024,
        ),
    )
    executor = ThreadPoolExecutor(
        max_workers=settings.concurrency + settings.js_workers,
        thread_name_prefix="vaultd-measure",
    )
    effects = Effects(
        model=model,
        sandbox=sandbox,
        executor=executor,
        model_slots=threading.BoundedSemaphore(settings.concurrency),
    )
    options = EngineOptions(
        model=settings.model,
        answer_model=settings.answer_model,
        max_tokens=settings.max_tokens,
        answer_max_tokens=settings.answer_max_tokens,
        max_note_bytes=settings.max_note_bytes,
    )
    try:
        yield Services(Engine(effects, writer, options), writer, has_key, recovered)
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
        sandbox.close()
        if isinstance(model, AnthropicModel):
            model.close()
