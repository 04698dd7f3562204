"""Live previews on the engine client (protocol 1.3 ``preview``): send one, end one. A mixin of
``session.EngineClient`` (it uses the client's registry, start-up, outbox and sender)."""
from __future__ import annotations

import os
from typing import Optional

from . import errors, jobs
from .events import READY

PREVIEW = "preview"                     # the job kind the client gives live previews (protocol request "preview")
PREVIEW_PROTOCOL = (1, 3)               # the engine's protocol version that answers "preview"


class PreviewRequests:
    def preview(self, set_path: str, hdri: str, frame: int, out: str, params: dict,
                job_id: Optional[str] = None) -> jobs.Job:
        """Relight frame ``frame`` of a G-buffer set or Blender render folder under ``hdri`` into ``out`` (an
        .exr; the engine writes a .png beside it) with the ``preview`` request. It runs beside the job queue
        and a newer preview supersedes it (the engine ends it with error ``cancelled``). Tracked as a job of
        kind ``preview`` whose params are the request body. Starts the engine when needed. Raises ClientError
        (the preview is then recorded as failed too) for an unusable or too old engine or bad params."""
        self._settle()
        body = {"set": os.fspath(set_path), "hdri": os.fspath(hdri), "frame": int(frame), "out": os.fspath(out),
                "params": jobs.plain(params)}
        job = self.registry.add(PREVIEW, body, os.path.dirname(body["out"]), job_id or jobs.new_job_id(PREVIEW))
        try:
            self.ensure_started()
            if self.state == READY and _version((self.info or {}).get("protocol")) < PREVIEW_PROTOCOL:
                raise errors.ClientError("unsupported", "this engine has no live preview (protocol 1.3 needed)",
                                         "update the engine (Preferences › Add-ons › DiffusionRenderer › Set Up "
                                         "Engine)")
            problems = self.protocol.validate(self._submit_msg(job, 0), self.protocol.TO_ENGINE)
            if problems:
                raise errors.ClientError("invalid_params", f"preview: {problems[0]}", "; ".join(problems[1:]),
                                         job=job.id)
        except errors.ClientError as exc:
            exc.job = job.id
            self.registry.set_state(job, jobs.FAILED, exc.short(), error=exc)
            raise
        if self.state == READY:
            self._send_submit(job)
        else:
            self._outbox.append(job.id)
        return job

    def cancel_preview(self, job_id: str) -> bool:
        """End a live preview: a cancel message, and the preview counts as cancelled at once (no SIGINT
        escalation: that would stop the job queue's job; whatever the engine still sends for it is ignored)."""
        job = self.registry.get(job_id)
        if job is None or job.is_terminal:
            return False
        if job_id in self._outbox:
            self._outbox.remove(job_id)
        elif self.proc is not None:
            self._send(self.protocol.cancel(job_id, id=self._request_id()))
        self.registry.set_state(job, jobs.CANCELLED, "cancelled")
        return True


def _version(text) -> tuple:
    """'1.3' → (1, 3); (0, 0) when unreadable."""
    try:
        return tuple(int(v) for v in str(text).split(".")[:2])
    except (TypeError, ValueError):
        return (0, 0)
