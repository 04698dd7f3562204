"""engine.hub against a fake Hugging Face Hub (no network: HfApi and snapshot_download are replaced)."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

huggingface_hub = pytest.importorskip("huggingface_hub")
from huggingface_hub import errors as hf_errors  # noqa: E402
from huggingface_hub.utils import are_progress_bars_disabled, filter_repo_objects  # noqa: E402

from engine import hub  # noqa: E402
from engine.hub import (  # noqa: E402
    PUBLISHED_MODELS,
    ModelSpec,
    WeightsUnavailableError,
    add_download_arguments,
    describe_local_models,
    download,
    resolve_model,
    run_download,
)

FORWARD_PIN = "bea8a656cff77215e70f1081070bd2b39dad004d"
INVERSE_MAIN = "1" * 40
OBJAVERSE_MAIN = "2" * 40
V2_SHA = "3" * 40
OTHER_SHA = "4" * 40

WEIGHTS = "diffusion_pytorch_model.safetensors"
COMMON = ["README.md", ".gitattributes", "config.json", "asset/teaser.jpg", "model_index.json", "unet/notes.txt",
          "unet/config.json", f"unet/{WEIGHTS}", "unet/diffusion_pytorch_model.bin", "unet/model.ckpt",
          "vae/config.json", f"vae/{WEIGHTS}", "vae/diffusion_pytorch_model.bin", "vae/state.pkl",
          "scheduler/scheduler_config.json"]
FORWARD_EXTRA = ["env_encoder/config.json", f"env_encoder/{WEIGHTS}", "env_encoder/diffusion_pytorch_model.bin",
                 "lora/pytorch_lora_weights.safetensors", "lora/pytorch_lora_weights.bin",
                 "nrm_encoder/config.json", f"nrm_encoder/{WEIGHTS}",
                 "env_decoder/config.json", f"env_decoder/{WEIGHTS}"]
REPO_FILES = {
    "nexuslrf/diffusion_renderer-inverse-svd": COMMON,
    "nexuslrf/diffusion_renderer-forward-svd": COMMON + FORWARD_EXTRA,
    "nexuslrf/diffusion_renderer-forward-svd-objaverse": COMMON + FORWARD_EXTRA[:3] + FORWARD_EXTRA[5:],
}
NEEDED_FORWARD = {"model_index.json", "unet/config.json", f"unet/{WEIGHTS}", "vae/config.json", f"vae/{WEIGHTS}",
                  "scheduler/scheduler_config.json", "env_encoder/config.json", f"env_encoder/{WEIGHTS}",
                  "lora/pytorch_lora_weights.safetensors"}


def _http_error(cls, message: str, status: int):
    """An instance of a huggingface_hub HTTP error class, whatever HTTP client this version uses."""
    for client in ("httpx2", "httpx", "requests"):
        try:
            mod = __import__(client)
            if client == "requests":
                response = mod.Response()
                response.status_code = status
            else:
                response = mod.Response(status, request=mod.Request("GET", "https://huggingface.co/api/x"))
            return cls(message, response=response)
        except Exception:
            continue
    err = cls.__new__(cls)
    Exception.__init__(err, message)
    return err


class FakeHub:
    """Stands in for HfApi.model_info and snapshot_download; records every call."""

    def __init__(self):
        self.heads = {"nexuslrf/diffusion_renderer-inverse-svd": {"main": INVERSE_MAIN},
                      "nexuslrf/diffusion_renderer-forward-svd": {"main": "f" * 40, "v2": V2_SHA},
                      "nexuslrf/diffusion_renderer-forward-svd-objaverse": {"main": OBJAVERSE_MAIN, "v2": V2_SHA}}
        self.info_calls: list[tuple[str, str | None]] = []
        self.snapshot_calls: list[dict] = []
        self.forbid_network = False
        self.info_error: Exception | None = None
        self.snapshot_error: Exception | None = None
        self.progress_disabled_during_download: bool | None = None

    def HfApi(self, *args, **kwargs):  # noqa: N802 (mimics the class)
        return SimpleNamespace(model_info=self.model_info, repo_info=self.model_info)

    def model_info(self, repo_id, *, revision=None, **kwargs):
        assert not self.forbid_network, f"model_info({repo_id}, {revision}) must not be called"
        self.info_calls.append((repo_id, revision))
        if self.info_error:
            raise self.info_error
        sha = self.heads[repo_id].get(revision or "main")
        if sha is None:
            raise _http_error(hf_errors.RevisionNotFoundError, f"Revision Not Found: {revision}", 404)
        return SimpleNamespace(id=repo_id, sha=sha)

    def snapshot_download(self, repo_id, *, revision=None, cache_dir=None, allow_patterns=None,
                          ignore_patterns=None, **kwargs):
        assert not self.forbid_network, f"snapshot_download({repo_id}) must not be called"
        self.snapshot_calls.append(dict(repo_id=repo_id, revision=revision, cache_dir=cache_dir,
                                        allow_patterns=allow_patterns, ignore_patterns=ignore_patterns))
        self.progress_disabled_during_download = are_progress_bars_disabled()
        if self.snapshot_error:
            raise self.snapshot_error
        assert len(revision) == 40, "engine.hub must pass a commit, never a moving branch"
        repo_dir = Path(cache_dir) / ("models--" + repo_id.replace("/", "--"))
        snapshot = repo_dir / "snapshots" / revision
        for f in filter_repo_objects(REPO_FILES[repo_id], allow_patterns=allow_patterns,
                                     ignore_patterns=ignore_patterns):
            (snapshot / f).parent.mkdir(parents=True, exist_ok=True)
            (snapshot / f).write_text("{}")
        return str(snapshot)


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    for key in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_OFFLINE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # bin/test exports HF_HUB_OFFLINE=1
    monkeypatch.setattr(hub, "_licence_shown", False)
    return tmp_path / "hf_home" / "hub"


@pytest.fixture
def fake(monkeypatch) -> FakeHub:
    fake = FakeHub()
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake.snapshot_download)
    monkeypatch.setattr(huggingface_hub, "HfApi", fake.HfApi)
    return fake


def record_of(cache: Path, name: str) -> dict:
    return json.loads(hub.record_path(PUBLISHED_MODELS[name], cache).read_text())


# ----------------------------------------------------------------------------- registry and patterns
def test_registry():
    assert set(PUBLISHED_MODELS) == {"inverse", "forward", "forward-objaverse"}
    fwd = PUBLISHED_MODELS["forward"]
    assert isinstance(fwd, ModelSpec) and fwd.revision == FORWARD_PIN and fwd.kind == "forward" and fwd.has_lora
    assert PUBLISHED_MODELS["inverse"].revision is None and PUBLISHED_MODELS["inverse"].kind == "inverse"
    assert PUBLISHED_MODELS["forward-objaverse"].revision is None


def test_patterns_select_only_inference_files():
    spec = PUBLISHED_MODELS["forward"]
    kept = set(filter_repo_objects(REPO_FILES[spec.repo_id], allow_patterns=hub.allow_patterns(spec),
                                   ignore_patterns=hub.IGNORE_PATTERNS))
    assert kept == NEEDED_FORWARD
    # Even if something matched the allow list, the ignore list drops unused folders and pickles.
    dropped = set(filter_repo_objects(["env_decoder/config.json", "nrm_encoder/x.safetensors", "asset/a.json",
                                       "unet/x.bin", "unet/x.ckpt", "unet/x.pkl", "unet/x.safetensors"],
                                      ignore_patterns=hub.IGNORE_PATTERNS))
    assert dropped == {"unet/x.safetensors"}
    inverse = PUBLISHED_MODELS["inverse"]
    assert not any(p.startswith(("env_encoder", "lora")) for p in hub.allow_patterns(inverse))


# ----------------------------------------------------------------------------- revisions
def test_forward_downloads_pinned_revision(cache, fake):
    path = resolve_model("forward", allow_download=True)
    assert fake.info_calls == []  # pinned: nothing to resolve
    (call,) = fake.snapshot_calls
    assert call["repo_id"] == "nexuslrf/diffusion_renderer-forward-svd" and call["revision"] == FORWARD_PIN
    assert Path(call["cache_dir"]) == cache
    assert call["allow_patterns"] == hub.allow_patterns(PUBLISHED_MODELS["forward"])
    assert "env_decoder/*" in call["ignore_patterns"] and "nrm_encoder/*" in call["ignore_patterns"]
    assert path == cache / "models--nexuslrf--diffusion_renderer-forward-svd" / "snapshots" / FORWARD_PIN
    files = {p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()}
    assert files == NEEDED_FORWARD
    assert not hub.record_path(PUBLISHED_MODELS["forward"], cache).exists()  # the pin lives in code
    # Cached now: no network on the next call.
    fake.forbid_network = True
    assert resolve_model("forward", allow_download=True) == path


def test_main_resolved_once_recorded_and_reused(cache, fake):
    first = resolve_model("inverse", allow_download=True)
    assert fake.info_calls == [("nexuslrf/diffusion_renderer-inverse-svd", "main")]
    assert [c["revision"] for c in fake.snapshot_calls] == [INVERSE_MAIN]
    rec = record_of(cache, "inverse")
    assert rec["commit"] == INVERSE_MAIN and rec["repo_id"] == "nexuslrf/diffusion_renderer-inverse-svd"
    assert first.name == INVERSE_MAIN

    fake.heads["nexuslrf/diffusion_renderer-inverse-svd"]["main"] = "9" * 40  # main moves on the Hub
    fake.forbid_network = True
    assert resolve_model("inverse", allow_download=True) == first
    assert resolve_model("inverse") == first

    # A damaged snapshot is re-downloaded at the recorded commit, without asking the Hub for main again.
    (first / "unet" / WEIGHTS).unlink()
    fake.forbid_network = False
    assert resolve_model("inverse", allow_download=True) == first
    assert len(fake.info_calls) == 1
    assert [c["revision"] for c in fake.snapshot_calls] == [INVERSE_MAIN, INVERSE_MAIN]
    download("inverse")
    assert len(fake.info_calls) == 1 and fake.snapshot_calls[-1]["revision"] == INVERSE_MAIN


def test_explicit_revision_overrides(cache, fake):
    # resolve_model(revision=sha): a one-off override of the pin, not recorded.
    path = resolve_model("forward", revision=OTHER_SHA, allow_download=True)
    assert path.name == OTHER_SHA and fake.snapshot_calls[-1]["revision"] == OTHER_SHA
    assert fake.info_calls == [] and not hub.record_path(PUBLISHED_MODELS["forward"], cache).exists()
    # download(revision=branch): resolved to a commit, downloaded, recorded as the new default.
    path = download("forward-objaverse", revision="v2")
    assert fake.info_calls == [("nexuslrf/diffusion_renderer-forward-svd-objaverse", "v2")]
    assert path.name == V2_SHA and record_of(cache, "forward-objaverse")["commit"] == V2_SHA
    assert record_of(cache, "forward-objaverse")["requested_revision"] == "v2"
    fake.forbid_network = True
    assert resolve_model("forward-objaverse") == path
    # Unknown revision on the Hub: clear error.
    fake.forbid_network = False
    with pytest.raises(WeightsUnavailableError, match="revision 'nope' does not exist"):
        download("inverse", revision="nope")


# ----------------------------------------------------------------------------- cache location
def test_hf_hub_cache_takes_precedence_over_hf_home(cache, fake, tmp_path, monkeypatch):
    custom = tmp_path / "custom_cache"
    monkeypatch.setenv("HF_HUB_CACHE", str(custom))
    path = download("inverse")
    assert Path(fake.snapshot_calls[-1]["cache_dir"]) == custom
    assert path.is_relative_to(custom) and hub.record_path(PUBLISHED_MODELS["inverse"], custom).is_file()
    assert not cache.exists()  # HF_HOME/hub untouched
    monkeypatch.delenv("HF_HUB_CACHE")
    assert hub.hub_cache_dir() == cache
    download("forward")
    assert Path(fake.snapshot_calls[-1]["cache_dir"]) == cache


# ----------------------------------------------------------------------------- unavailable weights
def test_offline_and_not_cached_gives_how_to(cache, fake, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    fake.forbid_network = True
    for call in (lambda: resolve_model("forward", allow_download=True), lambda: download("forward")):
        with pytest.raises(WeightsUnavailableError) as info:
            call()
        msg = str(info.value)
        assert info.value.model_name == "forward"
        assert "bin/diffusion-renderer download forward" in msg
        assert "--model /path/to/checkpoint_folder" in msg and "unet/, vae/, scheduler/" in msg
        assert "HF_HOME" in msg and str(cache) in msg and "HF_HUB_OFFLINE" in msg


def test_offline_uses_cached_snapshot(cache, fake, monkeypatch):
    online = download("inverse")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    fake.forbid_network = True
    assert resolve_model("inverse", allow_download=True) == online
    assert download("inverse") == online


def test_not_cached_and_download_not_allowed(cache, fake):
    fake.forbid_network = True
    with pytest.raises(WeightsUnavailableError, match="downloading is not enabled"):
        resolve_model("inverse")


def test_incomplete_snapshot_is_reported(cache, fake, monkeypatch):
    path = download("forward")
    (path / "env_encoder" / "config.json").unlink()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsUnavailableError, match="incomplete.*env_encoder/config.json"):
        resolve_model("forward")


@pytest.mark.parametrize("where,error,expected", [
    ("snapshot", hf_errors.LocalEntryNotFoundError("Cannot find the requested files"), "could not be reached"),
    ("info", ConnectionError("Failed to resolve huggingface.co"), "could not be reached"),
    ("info", _http_error(hf_errors.GatedRepoError, "Access restricted", 403), "gated"),
    ("info", _http_error(hf_errors.RepositoryNotFoundError, "404 Not Found", 404), "not found"),
])
def test_hub_failures_become_weights_unavailable(cache, fake, where, error, expected):
    setattr(fake, f"{where}_error", error)
    with pytest.raises(WeightsUnavailableError) as info:
        resolve_model("inverse", allow_download=True)
    assert expected in info.value.reason and type(error).__name__ in info.value.reason
    assert "bin/diffusion-renderer download inverse" in str(info.value)


# ----------------------------------------------------------------------------- local folders and names
def test_local_folder(tmp_path, monkeypatch, fake):
    fake.forbid_network = True
    ckpt = tmp_path / "ckpt"
    (ckpt / "unet").mkdir(parents=True)
    (ckpt / "unet" / "config.json").write_text("{}")
    assert resolve_model(ckpt) == ckpt and resolve_model(str(ckpt)) == ckpt
    monkeypatch.chdir(tmp_path)
    assert resolve_model("./ckpt") == Path("./ckpt") and resolve_model("ckpt") == Path("ckpt")


def test_local_folder_without_unet_config(tmp_path):
    ckpt = tmp_path / "ckpt"
    (ckpt / "vae").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="unet/config.json"):
        resolve_model(ckpt)
    (ckpt / "unet").mkdir()
    (ckpt / "unet" / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="pass its parent folder"):
        resolve_model(ckpt / "unet")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_model(tmp_path / "nope")


def test_unknown_name_lists_known_names():
    with pytest.raises(ValueError) as info:
        resolve_model("inverse-svd")
    assert all(name in str(info.value) for name in ("inverse", "forward", "forward-objaverse"))
    with pytest.raises(ValueError, match="forward-objaverse"):
        download("all")


def test_repo_id_is_an_alias(cache, fake):
    assert resolve_model("nexuslrf/diffusion_renderer-forward-svd", allow_download=True).name == FORWARD_PIN


# ----------------------------------------------------------------------------- revision record file
def test_record_written_atomically(cache, fake, monkeypatch):
    real_replace, renames = os.replace, []
    target = hub.record_path(PUBLISHED_MODELS["inverse"], cache)

    def spy(src, dst):
        src, dst = Path(src), Path(dst)
        assert dst == target and src.parent == dst.parent and src != dst
        assert json.loads(src.read_text())["commit"] == INVERSE_MAIN  # complete before it becomes visible
        assert not dst.exists()
        renames.append(src)
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    resolve_model("inverse", allow_download=True)
    assert len(renames) == 1 and not renames[0].exists()
    assert record_of(cache, "inverse")["commit"] == INVERSE_MAIN
    assert sorted(p.name for p in target.parent.iterdir()) == [hub.REVISION_RECORD, "snapshots"]


def test_record_write_failure_keeps_old_record(cache, monkeypatch, caplog):
    spec = PUBLISHED_MODELS["inverse"]
    hub._write_record(spec, cache, INVERSE_MAIN, "main")

    def failing_replace(src, dst):
        raise OSError("read-only file system")

    monkeypatch.setattr(os, "replace", failing_replace)
    with caplog.at_level(logging.WARNING, logger="engine.hub"):
        hub._write_record(spec, cache, OTHER_SHA, "main")  # warns, does not raise
    assert "Could not record" in caplog.text
    assert hub.recorded_revision(spec, cache) == INVERSE_MAIN
    assert [p.name for p in hub.record_path(spec, cache).parent.iterdir()] == [hub.REVISION_RECORD]


@pytest.mark.parametrize("content", ['{"repo_id": "nexuslrf/diffus', '{"commit": "main"}', "[1, 2]", "\xff\xfe"])
def test_corrupt_record_is_ignored_with_warning(cache, fake, caplog, content):
    path = hub.record_path(PUBLISHED_MODELS["inverse"], cache)
    path.parent.mkdir(parents=True)
    path.write_bytes(content.encode("latin-1"))
    with caplog.at_level(logging.WARNING, logger="engine.hub"):
        resolved = resolve_model("inverse", allow_download=True)
    assert "Ignoring" in caplog.text and str(path) in caplog.text
    assert resolved.name == INVERSE_MAIN and len(fake.info_calls) == 1  # main resolved again
    assert record_of(cache, "inverse")["commit"] == INVERSE_MAIN  # and the record repaired


# ----------------------------------------------------------------------------- local report, CLI, notices
def test_describe_local_models_without_network(cache, fake):
    fake.forbid_network = True
    assert [(d["name"], d["cached"], d["commit"]) for d in describe_local_models()] == [
        ("inverse", False, None), ("forward", False, None), ("forward-objaverse", False, None)]
    fake.forbid_network = False
    download("forward")
    download("inverse")
    # objaverse fetched by another tool: only refs/main, no record of ours
    spec = PUBLISHED_MODELS["forward-objaverse"]
    fake.snapshot_download(spec.repo_id, revision=OBJAVERSE_MAIN, cache_dir=str(cache),
                           allow_patterns=hub.allow_patterns(spec))
    (cache / "models--nexuslrf--diffusion_renderer-forward-svd-objaverse" / "refs").mkdir()
    (cache / "models--nexuslrf--diffusion_renderer-forward-svd-objaverse" / "refs" / "main").write_text(OBJAVERSE_MAIN)
    fake.forbid_network = True
    info = {d["name"]: d for d in describe_local_models()}
    assert info["forward"]["cached"] and info["forward"]["commit"] == FORWARD_PIN
    assert info["forward"]["revision_source"] == "pinned" and Path(info["forward"]["path"]).is_dir()
    assert info["inverse"]["commit"] == INVERSE_MAIN and info["inverse"]["revision_source"] == "recorded"
    assert info["forward-objaverse"]["commit"] == OBJAVERSE_MAIN
    assert info["forward-objaverse"]["revision_source"] == "refs/main"
    assert not hub.record_path(spec, cache).exists()  # describing never writes
    assert resolve_model("forward-objaverse").name == OBJAVERSE_MAIN  # resolving pins it
    assert record_of(cache, "forward-objaverse")["commit"] == OBJAVERSE_MAIN


def _cli(argv):
    parser = argparse.ArgumentParser(prog="diffusion-renderer")
    add_download_arguments(parser.add_subparsers(dest="command").add_parser("download"))
    return run_download(parser.parse_args(argv))


def test_cli_download(cache, fake, capsys):
    assert _cli(["download", "forward"]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == (f"forward: nexuslrf/diffusion_renderer-forward-svd @ {FORWARD_PIN} -> "
                           f"{cache / 'models--nexuslrf--diffusion_renderer-forward-svd' / 'snapshots' / FORWARD_PIN}")
    assert "non-commercial" in err
    assert _cli(["download"]) == 0  # default: all
    out, err = capsys.readouterr()
    assert [line.split(":")[0] for line in out.splitlines()] == ["inverse", "forward", "forward-objaverse"]
    assert "non-commercial" not in err  # licence shown once per process
    assert _cli(["download", "forward-objaverse", "--revision", "v2", "--no-progress"]) == 0
    assert fake.snapshot_calls[-1]["revision"] == V2_SHA and fake.progress_disabled_during_download
    assert not are_progress_bars_disabled()  # restored
    assert _cli(["download", "all", "--revision", "v2"]) == 2
    with pytest.raises(SystemExit):
        _cli(["download", "sideways"])


def test_cli_failure_is_one_line(cache, fake, capsys):
    fake.snapshot_error = hf_errors.LocalEntryNotFoundError("Cannot find the requested files")
    assert _cli(["download", "inverse"]) == 1
    out, err = capsys.readouterr()
    errors = [line for line in err.splitlines() if line.startswith("error")]
    assert out == "" and len(errors) == 1
    assert "inverse" in errors[0] and "nexuslrf/diffusion_renderer-inverse-svd" in errors[0]
    assert "could not be reached" in errors[0]


def test_licence_logged_once(cache, fake, caplog):
    with caplog.at_level(logging.WARNING, logger="engine.hub"):
        download("forward")
        download("inverse")
    assert caplog.text.count("NVIDIA Source Code License") == 1 and "non-commercial" in caplog.text
