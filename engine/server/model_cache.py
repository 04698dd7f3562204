"""Loaded renderers kept between jobs: an LRU keyed by (kind, model, revision, device, dtype).

``max_models`` bounds how many stay loaded (default 1: one full-size model fits a consumer GPU, two
often do not). When a new model is needed and the cache is full, the least recently used one is
dropped *before* loading, so the peak never holds more than ``max_models`` + nothing. 0 = keep none
(every job loads its model). Loading happens in the worker thread only; ``unload()`` may come from
any thread and never waits for a load in progress."""
from __future__ import annotations

import gc
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("engine.server")


def _model_id(model: str) -> str:
    """Published names stay names; anything path-like becomes an absolute path (one key per folder)."""
    p = Path(str(model)).expanduser()
    if any(c in str(model) for c in "/\\") or str(model).startswith((".", "~")) or p.exists():
        try:
            return str(p.resolve())
        except OSError:
            return str(p)
    return str(model)


def cuda_allocated() -> int | None:
    import torch

    return int(torch.cuda.memory_allocated()) if torch.cuda.is_available() else None


def free_device_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        try:
            torch.cuda.ipc_collect()
        except RuntimeError:
            pass


class ModelCache:
    def __init__(self, max_models: int = 1):
        self.max_models = max(0, int(max_models))
        self._models: OrderedDict[tuple, object] = OrderedDict()
        self._lock = threading.Lock()
        self.needs_empty_cache = False   # an unload came while a job held its model

    @staticmethod
    def key(kind: str, model: str, revision: str | None, device: str, dtype: str, memory: str = "default") -> tuple:
        from engine.pipelines.memory import memory_plan
        from engine.pipelines.components import pick_device, pick_dtype

        dev = pick_device(device)
        return (kind, _model_id(model), revision or None, str(dev), str(pick_dtype(dtype, dev)).replace("torch.", ""),
                memory_plan(memory).mode)

    @staticmethod
    def describe(key: tuple) -> dict:
        return dict(zip(("kind", "model", "revision", "device", "dtype", "memory"), key))

    def loaded(self) -> list[dict]:
        with self._lock:
            return [self.describe(k) for k in self._models]

    def get(self, kind: str, model: str, revision: str | None, device: str, dtype: str, memory: str = "default", *,
            allow_download: bool = True, on_load: Callable[[], None] | None = None) -> tuple:
        """(renderer, load_seconds, cached). ``on_load()`` is called just before a real load."""
        key = self.key(kind, model, revision, device, dtype, memory)
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key], 0.0, True
            evicted = []
            while self._models and len(self._models) >= max(1, self.max_models):
                evicted.append(self._models.popitem(last=False)[0])
        if evicted:
            log.info("dropping %s to make room", ", ".join(map(str, evicted)))
            free_device_memory()
        if on_load is not None:
            on_load()
        from engine.pipelines.loading import load_renderer

        t0 = time.monotonic()
        renderer = load_renderer(kind, model, revision=revision, device=key[3], dtype=key[4], memory=key[5],
                                 allow_download=allow_download)
        seconds = time.monotonic() - t0
        log.info("loaded %s in %.2f s", key, seconds)
        if self.max_models:
            with self._lock:
                self._models[key] = renderer
                while len(self._models) > self.max_models:
                    self._models.popitem(last=False)
        return renderer, seconds, False

    def unload(self) -> list[dict]:
        """Drop every cached model, collect garbage and empty the CUDA cache. A running job keeps its
        model until it ends; the worker empties the cache again then (``needs_empty_cache``)."""
        with self._lock:
            dropped = [self.describe(k) for k in self._models]
            self._models.clear()
            self.needs_empty_cache = True
        free_device_memory()
        log.info("unloaded %d model(s)", len(dropped))
        return dropped
