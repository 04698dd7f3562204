"""Live Preview: while it is on, a change of the light or the frame relights the current frame within seconds
(the engine's ``preview`` request, protocol 1.3) into the "Neural Preview" image. :mod:`.plan` reads what to
preview from the scene, :mod:`.shot` exports Neural Render's G-buffers once per shot, :mod:`.loop` debounces
and sends, :mod:`.image` reloads the image, :mod:`.operator` is the toggle."""
from .loop import active_task, start, step, stop, tick, unregister
from .operator import DR_OT_live_preview, classes, draw

__all__ = ["active_task", "start", "step", "stop", "tick", "unregister", "DR_OT_live_preview", "classes", "draw"]
