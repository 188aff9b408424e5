"""The effects, built once from the settings and closed together.

The model client, the JavaScript sandbox, the writer and the threads measures run on are
the only parts of vaultd that touch the world; this is where they are made.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from vaultd.config import Assistant, Settings
from vaultd.edges.assistants import Assistants, Client, MissingKey
from vaultd.edges.batch import Batches, BatchModel
from vaultd.edges.cache import CachedModel, ResponseCache
from vaultd.edges.clock import wall_clock
from vaultd.edges.model import AnthropicModel, NoKeyModel, credentials_problem
from vaultd.edges.sandbox import Sandbox, SandboxLimits
from vaultd.edges.writer import Recovery, Writer, recovery_sentence
from vaultd.errors import WriteError
from vaultd.evaluate.ask import Model
from vaultd.evaluate.runner import Effects, ModelSlots
from vaultd.runs.engine import Engine, EngineOptions

log = logging.getLogger("vaultd.services")


@dataclass
class Services:
    engine: Engine
    writer: Writer
    credentials_problem: str | None  # None: the model can be asked
    recovered: list[Recovery]
    batches: Batches | None = None  # with ``batch``: the rounds of Message Batches
    settings: Settings | None = None
    vault: Path | None = None
    cache: ResponseCache | None = None
    clients: list[AnthropicModel] = field(default_factory=list)  # closed on leaving

    def reload_model(self) -> str | None:
        """Make the model anew from the environment as it is now (a key that was missing or
        refused may have been fixed); returns what is wrong with the credentials, or None.

        Requests in flight finish on the model they started with."""
        assert self.settings is not None
        problem = credentials_problem()
        model: Model
        if problem:
            model = NoKeyModel(problem)
        else:
            client = model_client(self.settings)
            self.clients.append(client)
            model = client
            if self.settings.cache:
                if self.cache is None:
                    assert self.vault is not None
                    self.cache = ResponseCache(self.vault / CACHE_FILE)
                model = CachedModel(client, self.cache)
        self.engine.effects.model = route(model, self.settings, self.cache)
        self.credentials_problem = problem
        return problem


def route(model: Model, settings: Settings, cache: ResponseCache | None) -> Model:
    """``model`` for the vault's own requests, and each configured assistant's client for
    its own (see :mod:`vaultd.edges.assistants`)."""
    if not settings.assistants:
        return model
    return Assistants(model, settings.assistants, lambda name, a: assistant_client(
        settings, name, a), cache if settings.cache else None, settings.prices)


def with_assistant_prices(settings: Settings) -> Settings:
    """The settings, with each assistant's ``prices`` in the price table under its model."""
    extra = {a.model: a.prices for a in settings.assistants.values() if a.prices is not None}
    if not extra:
        return settings
    return settings.model_copy(update={"prices": {**settings.prices, **extra}})


def assistant_client(settings: Settings, name: str, assistant: Assistant) -> Client:
    """The client of a configured assistant: its provider's SDK (imported only now), its
    URL, and the key from the one variable it names (none where it names none)."""
    if assistant.provider == "openai":
        from vaultd.edges.openai_model import OpenAIModel

        return OpenAIModel(name, assistant.model, base_url=assistant.base_url,
                           api_key_env=assistant.api_key_env, system=assistant.system,
                           max_retries=settings.model_retries, timeout=settings.model_timeout)
    variable = assistant.api_key_env
    key = os.environ.get(variable) if variable else "none"  # "": a proxy that needs none
    if not key:
        return MissingKey(f"{name}: no API key (set {variable})")
    return AnthropicModel(max_retries=settings.model_retries, timeout=settings.model_timeout,
                          base_url=assistant.base_url, api_key=key)


def model_client(settings: Settings) -> AnthropicModel:
    """The one model client of a run, for single requests and batches alike: one retry
    policy (``model_retries``) and one deadline (``model_timeout``)."""
    return AnthropicModel(max_retries=settings.model_retries, timeout=settings.model_timeout)


CACHE_FILE = Path(".vaultd") / "cache.sqlite3"
STATE_DIR = Path(".vaultd")


# vaultd's own files in VAULT/.vaultd (cache.py's, daemon.py's, batch.py's); with the
# folder itself and the journal (writer.py), none is ever followed through a link (the
# temporary files of writer.write_whole are new files, created exclusively).
OWN_FILES = ("cache.sqlite3", "cache.sqlite3-wal", "cache.sqlite3-shm", "cache.sqlite3-journal",
             "daemon.json", "batches.json")


def private_state(vault: Path) -> None:
    """``VAULT/.vaultd`` and its journal are the owner's alone (0700), even if someone made
    the folder before vaultd did (to put a config.toml in it, say). vaultd creates every file
    in it 0600 itself; a file the user put there keeps the mode they gave it.

    A symbolic link at ``.vaultd``, its journal or one of vaultd's files in it is refused
    (:class:`WriteError`, so nothing runs): vaultd never writes through one, wherever it
    points."""
    for folder in (vault / STATE_DIR, vault / STATE_DIR / "journal",
                   *(vault / STATE_DIR / name for name in OWN_FILES)):
        try:
            st = os.lstat(folder)
        except OSError as exc:
            if not isinstance(exc, (FileNotFoundError, NotADirectoryError)):
                log.warning("cannot make %s private: %s", folder, exc.strerror or exc)
            continue
        if stat.S_ISLNK(st.st_mode):
            raise WriteError(f"{folder}: is a symbolic link: vaultd never follows a link in "
                             "its folder .vaultd; remove it (vaultd did not touch it)")
        if folder.name in OWN_FILES:
            continue
        try:
            if stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and st.st_mode & 0o077:
                os.chmod(folder, stat.S_IMODE(st.st_mode) & 0o700)
        except OSError as exc:
            log.warning("cannot make %s private: %s", folder, exc.strerror or exc)


@contextmanager
def open_services(
    vault: Path,
    settings: Settings,
    on_written: Callable[[Path, os.stat_result], None] | None = None,
    live_interval: float = 0.25,
    batch: bool = False,
    announce_at_start: bool = True,
    warm_up: bool = False,
) -> Iterator[Services]:
    """Everything the engine needs for ``vault``; the journal is recovered first.

    With ``warm_up``, the model client is made in the background from the start (else on
    the first request the cache cannot answer). Model requests go through the response
    cache (unless ``settings.cache`` is off); with ``batch`` they are deferred to the
    Message Batches API instead of sent one by one.

    On leaving, model requests still in flight are not waited for: every note's own
    thread has finished its writes by then.
    """
    now = wall_clock()  # VAULTD_NOW, checked before anything is opened
    private_state(vault)
    settings = with_assistant_prices(settings)
    writer = Writer(vault, on_written=on_written)
    recovered = writer.recover()
    for item in recovered:
        log.warning("journal: %s: %s", item.path, recovery_sentence(item.outcome, item.detail))
    problem = credentials_problem()
    cache: ResponseCache | None = None
    clients: list[AnthropicModel] = []
    batches: Batches | None = None
    model: Model
    if problem:
        model = NoKeyModel(problem)
    elif batch:
        client = model_client(settings)
        clients.append(client)
        cache = ResponseCache(vault / CACHE_FILE)
        batch_model = BatchModel(cache)
        batches = Batches(vault, cache, batch_model, client, poll_interval=settings.batch_poll)
        model = batch_model
    else:
        client = model_client(settings)
        clients.append(client)
        if warm_up:  # the SDK takes a second to import: start now, while notes are read
            client.warm_up()
        model = client
        if settings.cache:
            cache = ResponseCache(vault / CACHE_FILE)
            model = CachedModel(client, cache)
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
        model=route(model, settings, cache),
        sandbox=sandbox,
        executor=executor,
        model_slots=ModelSlots(settings.concurrency),
    )
    options = EngineOptions(settings, live_interval, announce_at_start)
    services = Services(Engine(effects, writer, options, now=now), writer, problem, recovered,
                        batches, settings, vault, cache, clients)
    try:
        yield services
    finally:
        executor.shutdown(wait=False, cancel_futures=True)
        if isinstance(services.engine.effects.model, Assistants):
            services.engine.effects.model.close()
        writer.close()
        sandbox.close()
        for client in clients:
            client.close()
        if services.cache is not None:
            services.cache.close()
