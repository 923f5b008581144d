"""Models kept loaded for generation, each behind its batching engine (model/engine.py) and the thread that steps
it: a small LRU cache, so a request neither reloads weights from storage nor waits for another request's turn."""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict

from infra.objectstore import AsyncObjectStore
from model.checkpoint import load_model, unpack_checkpoint
from model.device import pick_device
from model.engine import Engine


class Served:
    """One loaded model: its engine, stepped by a thread of its own (PyTorch releases the GIL as it computes)."""

    def __init__(self, engine: Engine, name: str, start: bool = True, threads: int | None = None):
        self.engine = engine
        self._stop = threading.Event()
        self._thread = threading.Thread(target=engine.run, args=(self._stop, 0.05, threads), name=name, daemon=True)
        if start:  # (a test steps the engine itself)
            self._thread.start()

    def close(self, reason: str = "the model was unloaded; try again") -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self.engine.refuse_all(reason)


class ModelCache:
    def __init__(self, store: AsyncObjectStore, size: int, slots: int = 64, max_wait_s: float = 30.0,
                 threads: int | None = None):
        self._store = store
        self._size = size
        self._slots, self._max_wait_s, self._threads = slots, max_wait_s, threads
        self._entries: OrderedDict[str, Served] = OrderedDict()
        self._loading: dict[str, asyncio.Lock] = {}
        self.loads = 0

    async def get(self, checkpoint_key: str, version: str) -> Served:
        """The engine for a checkpoint; `version` changes when the checkpoint is rewritten (more training)."""
        cache_key = f"{checkpoint_key}@{version}"
        if (served := self._entries.get(cache_key)) is not None:
            self._entries.move_to_end(cache_key)
            return served
        lock = self._loading.setdefault(cache_key, asyncio.Lock())
        async with lock:
            if (served := self._entries.get(cache_key)) is None:
                data = await self._store.get_bytes(checkpoint_key)
                engine = await asyncio.to_thread(_load, data, self._slots, self._max_wait_s)
                served = Served(engine, f"engine {checkpoint_key}", threads=self._threads)
                self.loads += 1
                self._entries[cache_key] = served
                self._evict()
        self._loading.pop(cache_key, None)
        return served

    def loaded(self) -> list[tuple[str, Served]]:
        """(checkpoint@version, its engine) of every loaded model."""
        return list(self._entries.items())

    def _evict(self) -> None:
        """Unload the least recently used engines past the size, but never one still serving a request."""
        for key in list(self._entries)[:-1]:
            if len(self._entries) <= self._size:
                return
            if not self._entries[key].engine.busy:
                self._entries.pop(key).close()

    def close(self) -> None:
        while self._entries:
            self._entries.popitem()[1].close("the worker is stopping; try again")


def _load(data: bytes, slots: int, max_wait_s: float) -> Engine:
    model, tokenizer = load_model(unpack_checkpoint(data), device=pick_device())
    return Engine(model, tokenizer, slots=slots, max_wait_s=max_wait_s)
