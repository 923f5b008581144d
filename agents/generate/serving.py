"""Models kept loaded for generation: a small LRU cache, so a request does not reload weights from storage."""

from __future__ import annotations

import asyncio
from collections import OrderedDict

from infra.objectstore import AsyncObjectStore
from model.checkpoint import load_model, unpack_checkpoint
from model.device import pick_device
from model.generate import Generator


class ModelCache:
    def __init__(self, store: AsyncObjectStore, size: int):
        self._store = store
        self._size = size
        self._entries: OrderedDict[str, Generator] = OrderedDict()
        self._loading: dict[str, asyncio.Lock] = {}
        self.loads = 0

    async def get(self, checkpoint_key: str, version: str) -> Generator:
        """The generator for a checkpoint; `version` changes when the checkpoint is rewritten (more training)."""
        cache_key = f"{checkpoint_key}@{version}"
        if (generator := self._entries.get(cache_key)) is not None:
            self._entries.move_to_end(cache_key)
            return generator
        lock = self._loading.setdefault(cache_key, asyncio.Lock())
        async with lock:
            if (generator := self._entries.get(cache_key)) is None:
                data = await self._store.get_bytes(checkpoint_key)
                generator = await asyncio.to_thread(_load, data)
                self.loads += 1
                self._entries[cache_key] = generator
                while len(self._entries) > self._size:
                    self._entries.popitem(last=False)
        self._loading.pop(cache_key, None)
        return generator


def _load(data: bytes) -> Generator:
    model, tokenizer = load_model(unpack_checkpoint(data), device=pick_device())
    return Generator(model, tokenizer)
