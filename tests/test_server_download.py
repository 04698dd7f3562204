"""The engine's "download" request (docs/PROTOCOL.md): ack, progress in MiB (stage "download"), then a result of
kind "download" naming the snapshot folder, or an error — through the server's line handler with a fake Hub
(tests/hub_fakes.py; no network)."""
from __future__ import annotations

import os
import time

import pytest

from engine.contract import protocol as P
from tests.hub_fakes import FORWARD_PIN, INVERSE_MAIN, install_fake_hub, isolated_hub_cache

MIB = 1 << 20


@pytest.fixture
def server(tmp_path):
    from engine.server.serve import Server

    rfd, wfd = os.pipe()
    srv = Server(os.open(os.devnull, os.O_RDONLY), wfd, None)
    srv.read_fd = rfd
    yield srv
    os.close(wfd)
    os.close(rfd)


def _messages(srv, until, timeout=20.0) -> list:
    """Every message the server wrote until one matches ``until``; each is validated against the table."""
    out, buf, deadline = [], b"", time.monotonic() + timeout
    os.set_blocking(srv.read_fd, False)
    while time.monotonic() < deadline:
        try:
            buf += os.read(srv.read_fd, 1 << 16)
        except BlockingIOError:
            time.sleep(0.01)
        *lines, buf = buf.split(b"\n")
        for line in lines:
            msg = P.check(P.decode(line), P.TO_CLIENT)
            out.append(msg)
            if until(msg):
                return out
    raise AssertionError(f"no final message within {timeout} s: {out}")


def _terminal(msg) -> bool:
    return msg["type"] in ("result", "error") and msg.get("job") == "dl-1"


def test_download_models_are_the_published_ones():
    from engine.model_registry import PUBLISHED_MODELS

    assert P.DOWNLOAD_MODELS == tuple(PUBLISHED_MODELS)


def test_download_request_round_trip_with_progress(server, tmp_path, monkeypatch):
    cache = isolated_hub_cache(tmp_path, monkeypatch)
    fake = install_fake_hub(monkeypatch)
    plain = fake.snapshot_download

    def with_bytes(repo_id, *, tqdm_class=None, **kw):
        """Like the real one: a byte bar of the snapshot's size, updated as files are written."""
        assert tqdm_class is not None, "the engine asks for byte progress"
        bar = tqdm_class(total=0, unit="B", desc="Reconstructing")
        bar.total = 6 * MIB
        for _ in range(3):
            bar.update(2 * MIB)
        bar.close()
        return plain(repo_id, **kw)

    monkeypatch.setattr("huggingface_hub.snapshot_download", with_bytes)
    msg = P.download("dl-1", "forward", id=7)
    assert P.validate(msg, P.TO_ENGINE) == []
    server.handle_line(P.encode(msg))
    got = _messages(server, _terminal)
    ack, *progress, end = got
    assert (ack["type"], ack["request"], ack["job"], ack["reply_to"]) == ("ack", "download", "dl-1", 7)
    assert progress and all(m["stage"] == "download" and m["total"] == 6 for m in progress)
    assert progress[-1]["step"] == 6 and [m["step"] for m in progress] == sorted(m["step"] for m in progress)
    assert (end["type"], end["kind"], end["reply_to"], end["manifests"]) == ("result", "download", 7, [])
    assert end["out"] == str(cache / "models--nexuslrf--diffusion_renderer-forward-svd" / "snapshots" / FORWARD_PIN)
    assert end["summary"]["commit"] == FORWARD_PIN and os.path.isfile(os.path.join(end["out"], "unet/config.json"))
    assert [c["revision"] for c in fake.snapshot_calls] == [FORWARD_PIN]     # the pinned revision


def test_download_resolves_an_unpinned_model_once(server, tmp_path, monkeypatch):
    isolated_hub_cache(tmp_path, monkeypatch)
    fake = install_fake_hub(monkeypatch)
    server.handle_line(P.encode(P.download("dl-1", "inverse", id="a")))
    end = _messages(server, _terminal)[-1]
    assert end["type"] == "result" and end["summary"]["commit"] == INVERSE_MAIN
    assert fake.info_calls == [("nexuslrf/diffusion_renderer-inverse-svd", "main")]


def test_download_failure_is_a_weights_error_naming_the_model(server, tmp_path, monkeypatch):
    isolated_hub_cache(tmp_path, monkeypatch)
    fake = install_fake_hub(monkeypatch)
    fake.snapshot_error = ConnectionError("no route to host")
    server.handle_line(P.encode(P.download("dl-1", "forward-objaverse", id=3)))
    end = _messages(server, _terminal)[-1]
    assert (end["type"], end["code"], end["reply_to"]) == ("error", "weights_unavailable", 3)
    assert "forward-objaverse" in end["message"] and "could not be reached" in end["message"]


def test_download_offline_engine_reports_instead_of_fetching(server, tmp_path, monkeypatch):
    isolated_hub_cache(tmp_path, monkeypatch)
    fake = install_fake_hub(monkeypatch)
    fake.forbid_network = True
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    server.handle_line(P.encode(P.download("dl-1", "forward", id=1)))
    end = _messages(server, _terminal)[-1]
    assert end["type"] == "error" and end["code"] == "weights_unavailable" and "HF_HUB_OFFLINE" in end["message"]


def test_bad_download_requests_are_rejected_by_the_table():
    assert P.validate(P.download("dl", "backward"), P.TO_ENGINE)
    assert P.validate({"type": "download", "v": P.VERSION, "model": "forward"}, P.TO_ENGINE)   # no job id
