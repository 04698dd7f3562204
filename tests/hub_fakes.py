"""A fake Hugging Face Hub for the engine.hub tests (tests/test_hub*.py): the published repositories' file
lists, :class:`FakeHub` (stands in for HfApi.model_info and snapshot_download, records every call) and
the set-up behind the tests' ``cache`` and ``fake`` fixtures. No network.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

huggingface_hub = pytest.importorskip("huggingface_hub")
from huggingface_hub import errors as hf_errors  # noqa: E402
from huggingface_hub.utils import are_progress_bars_disabled, filter_repo_objects  # noqa: E402

from engine import hub  # noqa: E402
from engine.hub import PUBLISHED_MODELS  # noqa: E402

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


def http_error(cls, message: str, status: int):
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


_REAL_SNAPSHOT_DOWNLOAD = huggingface_hub.snapshot_download


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
            raise http_error(hf_errors.RevisionNotFoundError, f"Revision Not Found: {revision}", 404)
        return SimpleNamespace(id=repo_id, sha=sha)

    def snapshot_download(self, repo_id, *, revision=None, cache_dir=None, allow_patterns=None,
                          ignore_patterns=None, **kwargs):
        if kwargs.get("local_files_only"):  # a cache lookup, no network: the real function reads the fake cache
            return _REAL_SNAPSHOT_DOWNLOAD(repo_id, revision=revision, cache_dir=cache_dir, local_files_only=True)
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


def isolated_hub_cache(tmp_path: Path, monkeypatch) -> Path:
    """The Hub cache under ``tmp_path`` (HF_HOME; no other cache variable), online, licence not yet shown;
    returns the cache folder (HF_HOME/hub)."""
    for key in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_OFFLINE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # bin/test exports HF_HUB_OFFLINE=1
    monkeypatch.setattr(hub, "_licence_shown", False)
    return tmp_path / "hf_home" / "hub"


def install_fake_hub(monkeypatch) -> FakeHub:
    """A :class:`FakeHub` standing in for huggingface_hub.snapshot_download and huggingface_hub.HfApi."""
    fake = FakeHub()
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake.snapshot_download)
    monkeypatch.setattr(huggingface_hub, "HfApi", fake.HfApi)
    return fake


def record_of(cache: Path, name: str) -> dict:
    return json.loads(hub.record_path(PUBLISHED_MODELS[name], cache).read_text())
