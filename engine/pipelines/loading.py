"""One way to load a renderer by kind: the jobs and the server's model cache both use it."""
from __future__ import annotations

from typing import Optional


def renderer_class(kind: str):
    from engine.pipelines.forward import ForwardRenderer
    from engine.pipelines.inverse import InverseRenderer

    try:
        return {"inverse": InverseRenderer, "forward": ForwardRenderer}[kind]
    except KeyError:
        raise ValueError(f"renderer kind must be 'inverse' or 'forward', not {kind!r}") from None


def load_renderer(kind: str, model, *, revision: Optional[str] = None, device=None, dtype=None,
                  memory: str = "default", allow_download: bool = False):
    """The ``kind`` renderer of ``model`` (published name or checkpoint folder) in memory mode ``memory``."""
    return renderer_class(kind).from_pretrained(model, revision=revision, device=device, dtype=dtype,
                                                allow_download=allow_download, memory=memory)
