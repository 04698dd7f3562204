"""DiffusionRenderer for Blender: neural inverse/forward rendering through a local engine subprocess.

The add-on is bpy + stdlib only; torch runs in the engine (``engine/``, started by ``client/``). Importing
this package does not import bpy (the client is usable from plain Python); ``register()`` does.
Metadata lives in ``blender_manifest.toml`` (extension); ``bl_info`` is for legacy installs only.
"""
bl_info = {
    "name": "DiffusionRenderer",
    "author": "DiffusionRenderer for Blender contributors",
    "version": (0, 1, 0),
    "blender": (4, 2, 0),
    "location": "Properties › Render › Neural Render; 3D Viewport › Sidebar › Neural Render",
    "description": "Neural inverse and forward rendering with video diffusion models",
    "category": "Render",
}

_REGISTERED: list = []


def _modules():
    from . import estimate_op, operators, panels, preferences, properties
    return properties, preferences, operators, estimate_op, panels


def register() -> None:
    import bpy

    from .client import timer

    modules = _modules()
    properties = modules[0]
    for cls in (c for module in modules for c in module.classes):
        bpy.utils.register_class(cls)
        _REGISTERED.append(cls)
    properties.register_props()
    timer.register()
    from . import results
    results.register()          # load_post: results that finished while another file was open


def unregister() -> None:
    import bpy

    from . import results
    from .client import shutdown_all, timer

    results.unregister()
    from . import live_preview
    live_preview.unregister()   # cancels a running preview; removes its timer and depsgraph handler
    timer.unregister()
    try:
        shutdown_all()          # ends downloads too: their status-bar progress goes with them
    finally:
        from . import hdri_list, model_manager, preferences, task_progress
        hdri_list.free_previews()
        task_progress.unregister()
        model_manager.unregister()
        preferences.unregister()
        properties = _modules()[0]
        properties.unregister_props()
        while _REGISTERED:
            cls = _REGISTERED.pop()
            try:
                bpy.utils.unregister_class(cls)
            except RuntimeError:
                pass
