"""The add-on's engine client: starts the engine subprocess, speaks the JSON-lines protocol with it (the
contract's ``protocol`` module, through ``..contract``), tracks jobs, reports errors.

Stdlib only; importing this package never imports bpy (only ``timer.register()`` does). Typical use:

    from .client import EngineConfig, configure, timer
    client = configure(EngineConfig(python=prefs.engine_python, engine_root=prefs.engine_root))
    timer.register()                                   # in register(); timer.unregister() in unregister()
    job = client.submit("inverse", {"input": clip, "passes": ["basecolor", "normal"]}, job_dir)
    job.on_done(lambda j: load_result(j.manifest) if j.state == "done" else show(j.error))
    client.cancel(job.id)

Scripts / ``blender -b``: ``blocking.run_job("inverse", params)``.
"""
from . import blocking, errors, jobs, timer
from .errors import ClientError
from .jobs import CANCELLED, CANCELLING, DONE, FAILED, QUEUED, REGISTRY, RUNNING, TERMINAL, Job, JobRegistry
from .process import EngineConfig, clean_env, probe_python
from .session import CLIENT_PROTOCOL_MAJOR, EngineClient, configure, current, shutdown_all

__all__ = [
    "blocking", "errors", "jobs", "timer", "ClientError", "Job", "JobRegistry", "REGISTRY",
    "QUEUED", "RUNNING", "CANCELLING", "DONE", "FAILED", "CANCELLED", "TERMINAL",
    "EngineConfig", "EngineClient", "configure", "current", "shutdown_all", "CLIENT_PROTOCOL_MAJOR",
    "clean_env", "probe_python",
]
