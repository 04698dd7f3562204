"""engine.hub against a fake Hugging Face Hub (no network: HfApi and snapshot_download are replaced, see
hub_fakes.py): the registry and download patterns, revisions (pinned, main recorded, explicit), the cache
location and unavailable weights. Local folders, the revision record, the local report and the CLI:
test_hub_local.py.
"""
from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("huggingface_hub")
from huggingface_hub import errors as hf_errors  # noqa: E402
from huggingface_hub.utils import filter_repo_objects  # noqa: E402

from engine import hub  # noqa: E402
from engine.hub import (  # noqa: E402
    PUBLISHED_MODELS,
    ModelSpec,
    WeightsUnavailableError,
    download,
    resolve_model,
)
from hub_fakes import (  # noqa: E402
    FORWARD_PIN,
    INVERSE_MAIN,
    NEEDED_FORWARD,
    OTHER_SHA,
    REPO_FILES,
    V2_SHA,
    WEIGHTS,
    FakeHub,
    http_error,
    install_fake_hub,
    isolated_hub_cache,
    record_of,
)


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    return isolated_hub_cache(tmp_path, monkeypatch)


@pytest.fixture
def fake(monkeypatch) -> FakeHub:
    return install_fake_hub(monkeypatch)


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
    ("info", http_error(hf_errors.GatedRepoError, "Access restricted", 403), "gated"),
    ("info", http_error(hf_errors.RepositoryNotFoundError, "404 Not Found", 404), "not found"),
])
def test_hub_failures_become_weights_unavailable(cache, fake, where, error, expected):
    setattr(fake, f"{where}_error", error)
    with pytest.raises(WeightsUnavailableError) as info:
        resolve_model("inverse", allow_download=True)
    assert expected in info.value.reason and type(error).__name__ in info.value.reason
    assert "bin/diffusion-renderer download inverse" in str(info.value)
