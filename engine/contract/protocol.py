"""The engine <-> add-on protocol: JSON lines over the engine's stdin/stdout (docs/PROTOCOL.md).

STDLIB ONLY: part of the contract package both sides import (``engine.contract.protocol``; the add-on via
``diffusion_renderer_addon/contract.py``), so they share one message table and one validator. Every
message is one JSON object on one line with ``"type"`` and the protocol version ``"v": "MAJOR.MINOR"``; the
major version must match, the minor one is informative (additions only: new optional fields, new message
types). Job parameters come from ``params.py``.

>>> line = encode(submit("job-1", "inverse", "/tmp/job-1", {"input": "/shots/plate.mp4", "steps": 20}))
>>> msg = decode(line)                 # ProtocolError on non-JSON, non-object, >1 MiB, other major
>>> check(msg, "to_engine")            # ProtocolError(code="invalid_params", ...) on a bad field
>>> validate(msg, "to_engine")         # or the list of problems ([] = valid)
[]
"""
from __future__ import annotations

import json

from . import params as param_table
from .fields import Field, clean_number, markdown_table, parse_version
from .fields import is_type
from .fields import show
from .fields import table_problems
from .gbuffer_set import DEFAULT_PASSES as _DEFAULT_PASSES, MODEL_PASSES

PROTOCOL_VERSION = (1, 3)   # 1.1: "estimate", "memory"; 1.2: job kind "gbuffers", stage "convert", params
#                             source_fps, first_frame, colorspace, output_size, fit; additive within 1.2:
#                             progress stage "write" and the fields light/lights (older clients ignore them);
#                             1.3: the "preview" request (live relight preview), progress stage "encode",
#                             result kind "preview" with "outputs"
VERSION = f"{PROTOCOL_VERSION[0]}.{PROTOCOL_VERSION[1]}"
MAX_LINE_BYTES = 1 << 20          # one message, UTF-8, without the newline
TO_ENGINE, TO_CLIENT = "to_engine", "to_client"

ERROR_CODES = {
    "bad_message": "the line is not a JSON object of this protocol (not JSON, not an object, over 1 MiB, "
                   "no/invalid 'type' or 'v', wrong envelope field)",
    "unknown_type": "the 'type' is not a message this engine knows",
    "version_mismatch": "the message's protocol major version differs from the engine's",
    "invalid_params": "a known message with a missing, mistyped or out-of-range field",
    "input_error": "the job cannot run as asked (input not found/unreadable, bad setting, output conflict)",
    "weights_unavailable": "the model weights are neither cached nor downloadable",
    "out_of_memory": "the device ran out of memory",
    "cancelled": "the job was cancelled (cancel message, SIGINT, shutdown, stdin closed or parent died)",
    "busy": "too many estimate/download requests are waiting; nothing was done, send the request again later",
    "internal": "an unexpected engine failure; the engine log has the traceback",
}

PASSES = MODEL_PASSES
DEFAULT_PASSES = list(_DEFAULT_PASSES)
JOB_KINDS = param_table.KINDS
ESTIMATE_KINDS = ("inverse", "forward", "preview")   # the kinds that run a model (gbuffers only converts files);
#                                                    "preview": one live-preview update after a rotation (1.3)
PROGRESS_STAGES = ("load_model", "denoise", "convert", "write",   # "write": decoding/writing the files
                   "download",                                     # "download": step/total in MiB
                   "encode")                                       # "encode": a preview's G-buffers / light
MEMORY_MODES = param_table.MEMORY_MODES
# additive within 1.2: the "download" request (the published models, engine/model_registry.py PUBLISHED_MODELS;
# a test keeps them equal); a download ends with a "result" of kind "download" or an "error"
DOWNLOAD_MODELS = ("inverse", "forward", "forward-objaverse")
PREVIEW = param_table.PREVIEW
RESULT_KINDS = (*JOB_KINDS, "download", PREVIEW)


class ProtocolError(ValueError):
    """A line or message that breaks the protocol. ``code`` is one of ERROR_CODES; ``problems`` lists
    every finding; ``reply_to``/``job`` are taken from the message when it had them."""

    def __init__(self, code: str, message: str, problems: list | None = None, *, reply_to=None, job=None):
        super().__init__(message)
        self.code, self.problems = code, list(problems or [message])
        self.reply_to, self.job = reply_to, job


# ----------------------------------------------------------------------------- the message table
_ID = Field("str|int", doc="request id chosen by the client; replies carry it as 'reply_to'")
_REPLY = Field("str|int|null", doc="the 'id' of the request this answers")
_JOB = Field("str", True, doc="job id chosen by the client (1-128 characters), unique among queued/running jobs")

MESSAGES: dict = {
    TO_ENGINE: {
        "hello": {"id": _ID, "client": Field("str", doc="client name and version, for the log")},
        "submit": {"id": _ID, "job": _JOB, "kind": Field("str", True, choices=JOB_KINDS),
                   "job_dir": Field("str", True, doc="absolute folder the engine may write into for this job"),
                   "params": Field("obj", True, doc="the job's settings (params.py; INVERSE_PARAMS / FORWARD_PARAMS / "
                                                 "GBUFFERS_PARAMS)")},
        "cancel": {"id": _ID, "job": _JOB},
        "estimate": {"id": _ID, "kind": Field("str", True, choices=ESTIMATE_KINDS),
                     "size": Field("obj", True, doc="{width, height, frames, passes (inverse) | lights (forward)}"),
                     "params": Field("obj", doc="the job's params as in submit (steps, frames, memory ...); "
                                                "inputs may be left out")},
        "status": {"id": _ID},
        "unload": {"id": _ID},
        "shutdown": {"id": _ID},
        "download": {"id": _ID, "job": Field("str", True, doc="id chosen by the client for this download: its ack, "
                                                          "progress (stage 'download', step/total in MiB) and "
                                                          "result (kind 'download', out = the snapshot folder) "
                                                          "or error carry it"),
                     "model": Field("str", True, choices=DOWNLOAD_MODELS),
                     "revision": Field("str|null", doc="branch, tag or commit instead of the pinned/recorded one")},
        "preview": {"id": _ID, "job": Field("str", True, doc="preview id chosen by the client; a newer preview "
                                                         "supersedes a running or queued one (error 'cancelled')"),
                    "set": Field("str", True, doc="absolute path of a G-buffer set or a Blender render folder "
                                                  "(render.json)"),
                    "hdri": Field("str", True, doc="absolute path of the environment map (.hdr/.exr)"),
                    "frame": Field("int", True, doc="the frame NUMBER of the set to relight"),
                    "out": Field("str", True, doc="absolute path of the .exr to write (linear); a .png (sRGB) "
                                                  "with the same stem is written beside it"),
                    "params": Field("obj", doc="PREVIEW_PARAMS (params.py kind 'preview'); left out: defaults")},
    },
    TO_CLIENT: {
        "hello": {"reply_to": _REPLY, "protocol": Field("str", True), "engine": Field("str", True),
                  "pid": Field("int", True), "python": Field("str", True), "platform": Field("str"),
                  "torch": Field("str|null", True), "cuda": Field("str|null", True),
                  "cuda_available": Field("bool", True), "device": Field("str", True),
                  "devices": Field("list[obj]", True), "models": Field("list[obj]", True),
                  "max_models": Field("int", True), "log_file": Field("str|null", True),
                  "loaded_models": Field("list[obj]"),
                  "cluster": Field("obj|null", doc="serve --cluster: {nodes, workers, devices: [{node, kind, count, "
                                                   "name}]} (docs/CLUSTER.md); null without a cluster")},
        "ack": {"reply_to": _REPLY, "request": Field("str", True, doc="type of the request acknowledged"),
                "job": Field("str"), "state": Field("str", choices=("queued", "cancelling", "removed", "unknown",
                                                                    "idle", "stopping", "done")),
                "queue_position": Field("int", minimum=0), "step": Field("int|null", doc="denoising steps done "
                                                                                     "when a cancel arrived"),
                "unloaded": Field("list[obj]"),
                "cuda_memory_allocated": Field("int|null")},
        "progress": {"job": _JOB, "stage": Field("str", True, choices=PROGRESS_STAGES),
                     "step": Field("int", True, minimum=0), "total": Field("int", True, minimum=0),
                     "chunk": Field("int|null"), "eta_s": Field("num|null"), "elapsed_s": Field("num"),
                     "light": Field("int|null", minimum=1, doc="forward jobs: the HDRI being rendered, 1-based"),
                     "lights": Field("int|null", minimum=1, doc="forward jobs: how many HDRIs the job renders")},
        "result": {"reply_to": _REPLY, "job": _JOB, "kind": Field("str", True, choices=RESULT_KINDS),
                   "manifests": Field("list[str]", True), "out": Field("str", True),
                   "summary": Field("obj", True), "seconds": Field("obj"),
                   "outputs": Field("list[str]", doc="a preview's files: [exr, png]")},
        "error": {"reply_to": _REPLY, "code": Field("str", True, choices=tuple(ERROR_CODES)),
                  "message": Field("str", True), "hint": Field("str|null"), "job": Field("str|null"),
                  "problems": Field("list[str]"), "step": Field("int|null"), "log_file": Field("str|null")},
        "estimate": {"reply_to": _REPLY, "kind": Field("str", True, choices=ESTIMATE_KINDS),
                     "seconds": Field("num", True), "peak_memory_gb": Field("num", True),
                     "device_memory_gb": Field("num|null"), "fits": Field("bool|null"),
                     "unet_evals": Field("int"), "detail": Field("obj")},
        "status": {"reply_to": _REPLY, "running": Field("obj|null", True), "queued": Field("list[str]", True),
                   "loaded_models": Field("list[obj]", True)},
    },
}

INVERSE_PARAMS = param_table.fields("inverse")
FORWARD_PARAMS = param_table.fields("forward")
GBUFFERS_PARAMS = param_table.fields("gbuffers")
PREVIEW_PARAMS = param_table.fields(PREVIEW)
PARAMS = {"inverse": INVERSE_PARAMS, "forward": FORWARD_PARAMS, "gbuffers": GBUFFERS_PARAMS, PREVIEW: PREVIEW_PARAMS}
PREVIEW_FILE_TYPES = {"set": None, "hdri": (".hdr", ".exr"), "out": (".exr",)}   # absolute paths; suffixes
ESTIMATE_SIZE = {k: Field("int", k in ("width", "height", "frames"), minimum=1)
                 for k in ("width", "height", "frames", "passes", "lights")}


# ----------------------------------------------------------------------------- validation
def _version_problem(msg: dict) -> tuple | None:
    """None when msg['v'] is present with our major version, else (code, problem)."""
    if "v" not in msg:
        return "bad_message", f"field 'v': required, the protocol version (this side speaks {VERSION})"
    version = parse_version(msg["v"])
    if version is None:
        return "bad_message", f"field 'v': expected 'MAJOR.MINOR' like {VERSION!r}, got {show(msg['v'])}"
    if version[0] != PROTOCOL_VERSION[0]:
        return "version_mismatch", (f"protocol version {msg['v']} is not compatible with {VERSION} (the major "
                                    "version must match: update the engine or the add-on)")
    return None


def _params_problems(kind: str, params: dict, inputs: bool = True) -> list:
    """Problems of a job's params; ``inputs=False`` (estimates): the input fields may be left out."""
    return param_table.problems(kind, params, inputs=inputs)


def _preview_problems(msg: dict) -> list:
    """A preview request's paths (absolute, right suffix), frame and params."""
    import os

    out = []
    for name, suffixes in PREVIEW_FILE_TYPES.items():
        value = msg[name]
        if not os.path.isabs(value):
            out.append(f"field '{name}': must be an absolute path, got {value!r}")
        elif suffixes and not value.lower().endswith(suffixes):
            out.append(f"field '{name}': {value!r} must end in {' or '.join(suffixes)}")
    if msg["frame"] < 0:
        out.append(f"field 'frame': a frame number is 0 or more, got {msg['frame']}")
    return out + _params_problems(PREVIEW, msg.get("params", {}))


def _classify(msg, direction: str) -> tuple:
    """(code, problems); problems == [] means valid."""
    if direction not in MESSAGES:
        raise ValueError(f"direction must be {TO_ENGINE!r} or {TO_CLIENT!r}, got {direction!r}")
    if not isinstance(msg, dict):
        return "bad_message", [f"a message is a JSON object, got {type(msg).__name__}"]
    envelope = []
    mtype = msg.get("type")
    if not isinstance(mtype, str) or not mtype:
        envelope.append(f"field 'type': required, a message type string, got {show(mtype)}")
    bad_version = _version_problem(msg)
    if bad_version and bad_version[0] == "version_mismatch":
        return bad_version[0], [bad_version[1]]
    if bad_version:
        envelope.append(bad_version[1])
    if envelope:
        return "bad_message", envelope
    table = MESSAGES[direction].get(mtype)
    if table is None:
        return "unknown_type", [f"unknown message type {mtype!r}; {direction.replace('_', ' ')} types are: "
                                f"{', '.join(MESSAGES[direction])}"]
    problems = table_problems(msg, table, "", f"in a {mtype} message")
    if "job" in table and isinstance(msg.get("job"), str) and not 1 <= len(msg["job"]) <= 128:
        problems.append("field 'job': must be 1 to 128 characters")
    if mtype == "submit" and direction == TO_ENGINE and not problems:
        problems += _params_problems(msg["kind"], msg["params"])
    if mtype == PREVIEW and direction == TO_ENGINE and not problems:
        problems += _preview_problems(msg)
    if mtype == "estimate" and direction == TO_ENGINE and not problems:
        problems += table_problems(msg["size"], ESTIMATE_SIZE, "size.", "in an estimate")
        problems += _params_problems(msg["kind"], msg.get("params", {}), inputs=False)
    return "invalid_params", problems


def validate(msg, direction: str = TO_ENGINE, *, strict: bool = False) -> list:
    """The list of problems with ``msg`` (empty when valid); ``strict=True`` raises ProtocolError
    instead. Unknown extra top-level fields are allowed (minor-version additions); unknown job
    parameters are not (they are almost always typos)."""
    code, problems = _classify(msg, direction)
    if problems and strict:
        raise _error(code, problems, msg)
    return problems


def check(msg, direction: str = TO_ENGINE) -> dict:
    """``validate(strict=True)``; returns the message."""
    validate(msg, direction, strict=True)
    return msg


def _error(code: str, problems: list, msg=None) -> ProtocolError:
    reply_to = job = None
    if isinstance(msg, dict):
        rid = msg.get("id")
        reply_to = rid if (is_type(rid, "str") and len(rid) <= 128) or is_type(rid, "int") else None
        job = msg.get("job") if isinstance(msg.get("job"), str) and 1 <= len(msg["job"]) <= 128 else None
    text = problems[0] if len(problems) == 1 else f"{problems[0]} (and {len(problems) - 1} more problem(s))"
    return ProtocolError(code, text, problems, reply_to=reply_to, job=job)


# ----------------------------------------------------------------------------- lines
def _reject_constant(name):
    raise ValueError(f"{name} is not valid JSON")


def decode(line) -> dict:
    """One line (str or bytes, trailing newline allowed) → message dict. Checks the envelope only
    (JSON object, size, 'v' present with the same major); use validate()/check() for the fields."""
    size = len(line) if isinstance(line, (bytes, bytearray)) else len(line.encode("utf-8", "surrogatepass"))
    if size > MAX_LINE_BYTES + 2:
        raise ProtocolError("bad_message", f"line of {size} bytes exceeds the {MAX_LINE_BYTES} byte limit")
    if isinstance(line, (bytes, bytearray)):
        try:
            line = bytes(line).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError("bad_message", f"line is not UTF-8 ({exc.reason} at byte {exc.start})") from None
    line = line.strip()
    if not line:
        raise ProtocolError("bad_message", "empty line")
    try:
        msg = json.loads(line, parse_constant=_reject_constant)
    except RecursionError:
        raise ProtocolError("bad_message", "line is not valid JSON (nested too deeply)") from None
    except ValueError as exc:
        raise ProtocolError("bad_message", f"line is not valid JSON ({exc})") from None
    if not isinstance(msg, dict):
        raise ProtocolError("bad_message", f"a message is a JSON object, got a JSON {type(msg).__name__}")
    bad_version = _version_problem(msg)
    if bad_version:
        raise _error(bad_version[0], [bad_version[1]], msg)
    return msg


def encode(msg: dict) -> str:
    """Message → one JSON line (no newline at the end, none inside; ASCII). Adds 'v' when absent."""
    if not isinstance(msg, dict):
        raise ProtocolError("bad_message", f"a message is a dict, got {type(msg).__name__}")
    if "v" not in msg:
        msg = {"type": msg.get("type"), "v": VERSION, **{k: v for k, v in msg.items() if k != "type"}}
    try:
        line = json.dumps(msg, ensure_ascii=True, separators=(",", ":"), allow_nan=False, default=_jsonable)
    except (TypeError, ValueError) as exc:
        raise ProtocolError("bad_message", f"message cannot be encoded as JSON ({exc})") from None
    if len(line) > MAX_LINE_BYTES:
        raise ProtocolError("bad_message", f"encoded message of {len(line)} bytes exceeds {MAX_LINE_BYTES}")
    return line


def _jsonable(value):
    if hasattr(value, "__fspath__"):
        return str(value)
    if isinstance(value, (set, tuple, frozenset)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


# ----------------------------------------------------------------------------- constructors
def _msg(mtype: str, **fields) -> dict:
    return {"type": mtype, "v": VERSION, **{k: v for k, v in fields.items() if v is not None}}


def hello(client: str | None = None, id=None) -> dict:
    return _msg("hello", id=id, client=client)


def submit(job: str, kind: str, job_dir: str, params: dict, id=None) -> dict:
    return _msg("submit", id=id, job=job, kind=kind, job_dir=str(job_dir), params=dict(params))


def cancel(job: str, id=None) -> dict:
    return _msg("cancel", id=id, job=job)


def estimate(kind: str, size: dict, params: dict | None = None, id=None) -> dict:
    return _msg("estimate", id=id, kind=kind, size=size, params=params or {})


def status(id=None) -> dict:
    return _msg("status", id=id)


def unload(id=None) -> dict:
    return _msg("unload", id=id)


def shutdown(id=None) -> dict:
    return _msg("shutdown", id=id)


def download(job: str, model: str, revision: str | None = None, id=None) -> dict:
    """Fetch a published model's weights into the engine's Hugging Face cache (ack, progress, result/error)."""
    return _msg("download", id=id, job=job, model=model, revision=revision)


def preview(job: str, set: str, hdri: str, frame: int, out: str, params: dict | None = None, id=None) -> dict:
    """Relight ``frame`` (a frame number) of the set/render folder ``set`` under ``hdri`` into ``out`` (.exr, and
    a .png beside it): ack, progress, then one result (kind "preview") or error; a newer preview supersedes it."""
    return _msg(PREVIEW, id=id, job=job, set=str(set), hdri=str(hdri), frame=frame, out=str(out),
                params=dict(params or {}))


def hello_reply(info: dict, reply_to=None) -> dict:
    return {**_msg("hello", reply_to=reply_to), **info}


def ack(request: str, reply_to=None, **fields) -> dict:
    return _msg("ack", request=request, reply_to=reply_to, **fields)


def progress(job: str, stage: str, step: int, total: int, chunk=None, eta_s=None, elapsed_s=None, light=None,
             lights=None) -> dict:
    m = _msg("progress", job=job, stage=stage, step=int(step), total=int(total), chunk=chunk,
             elapsed_s=clean_number(elapsed_s), light=light, lights=lights)
    m["eta_s"] = clean_number(eta_s)
    return m


def result(job: str, kind: str, manifests: list, out: str, summary: dict, seconds=None, reply_to=None,
           outputs=None) -> dict:
    return _msg("result", reply_to=reply_to, job=job, kind=kind, manifests=[str(m) for m in manifests], out=str(out),
                summary=summary, seconds=seconds, outputs=None if outputs is None else [str(o) for o in outputs])


def error(code: str, message: str, hint: str | None = None, *, job=None, reply_to=None, problems=None,
          step=None, log_file=None) -> dict:
    return _msg("error", reply_to=reply_to, code=code, message=message, hint=hint, job=job, problems=problems,
                step=step, log_file=log_file)


def estimate_reply(kind: str, est: dict, reply_to=None) -> dict:
    return _msg("estimate", reply_to=reply_to, kind=kind, seconds=est["seconds"],
                peak_memory_gb=est["peak_memory_gb"], device_memory_gb=est.get("device_memory_gb"),
                fits=est.get("fits"), unet_evals=est.get("unet_evals"), detail=est)


def status_reply(running: dict | None, queued: list, loaded_models: list, reply_to=None) -> dict:
    m = _msg("status", reply_to=reply_to, queued=list(queued), loaded_models=list(loaded_models))
    m["running"] = running
    return m


def message_table() -> str:
    """Markdown table of every message and field (docs/PROTOCOL.md embeds it)."""
    return markdown_table(MESSAGES)
