"""engine.hub against a fake Hugging Face Hub (hub_fakes.py), without downloads of its own: local
checkpoint folders and model names, the revision record file (atomic writes, failures, corrupt records),
the local report, the ``download`` command and the licence notice.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

import pytest

pytest.importorskip("huggingface_hub")
from huggingface_hub import errors as hf_errors  # noqa: E402
from huggingface_hub.utils import are_progress_bars_disabled  # noqa: E402

from engine import hub  # noqa: E402
from engine.hub import (  # noqa: E402
    PUBLISHED_MODELS,
    add_download_arguments,
    describe_local_models,
    download,
    resolve_model,
    run_download,
)
from hub_fakes import (  # noqa: E402
    FORWARD_PIN,
    INVERSE_MAIN,
    OBJAVERSE_MAIN,
    OTHER_SHA,
    V2_SHA,
    FakeHub,
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
