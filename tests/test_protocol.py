"""engine.contract.protocol: the message table, validator, encode/decode, fuzzing, and the docs' examples."""
import json
import random
import re

import pytest

from engine.contract import protocol as P

REPO = __import__("pathlib").Path(__file__).resolve().parents[1]
INV = {"input": "/shots/plate.mp4", "steps": 2, "resolution": "64x64", "frames": 4, "overlap": 0}
FWD = {"gbuffers": "/sets/plate", "hdri": ["/hdri/studio.hdr"], "guidance": 1.0}
GB = {"input": "/renders/shot010", "previews": False}


def test_version_and_pass_list_match_the_engine():
    from engine.pipelines import PASS_INDEX

    from engine.pipelines.memory import PLANS

    assert P.PROTOCOL_VERSION == (1, 3) and P.VERSION == "1.3"
    assert list(P.PASSES) == list(PASS_INDEX)
    assert P.MEMORY_MODES == tuple(PLANS)
    assert P.JOB_KINDS == ("inverse", "forward", "gbuffers") and "convert" in P.PROGRESS_STAGES


@pytest.mark.parametrize("msg", [
    P.hello(client="blender-addon 0.1", id=1), P.submit("j1", "inverse", "/tmp/j1", INV, id="r1"),
    P.submit("j2", "forward", "/tmp/j2", FWD), P.submit("j3", "gbuffers", "/tmp/j3", GB), P.cancel("j1"), P.status(),
    P.unload(id=7), P.shutdown(),
])
def test_constructors_build_valid_requests_that_round_trip(msg):
    assert P.validate(msg, "to_engine") == []
    line = P.encode(msg)
    assert "\n" not in line and "\r" not in line
    assert P.decode(line) == msg
    assert P.decode(line.encode() + b"\n") == msg


def test_engine_side_constructors_are_valid():
    msgs = [P.ack("submit", "r1", job="j1", state="queued", queue_position=0),
            P.ack("cancel", None, job="j1", state="cancelling", step=3),
            P.progress("j1", "denoise", 3, 20, chunk=0, eta_s=float("nan"), elapsed_s=1.5),
            P.progress("j3", "convert", 2, 12),
            P.result("j3", "gbuffers", ["/o/manifest.json"], "/o", {"clips": []}),
            P.result("j1", "inverse", ["/o/manifest.json"], "/o", {"clips": []}, {"total": 1.0}),
            P.error("cancelled", "job cancelled", job="j1", step=4),
            P.status_reply(None, ["j2"], [])]
    for m in msgs:
        assert P.validate(m, "to_client") == [], m
        json.loads(P.encode(m))
    assert msgs[2]["eta_s"] is None, "NaN never reaches the wire"


def test_validate_reports_every_problem_with_its_field():
    bad = P.submit("j", "inverse", "/tmp/j", {**INV, "steps": 0, "overlap": 4, "passes": ["albedo"], "stpes": 3,
                                               "previews": "yes", "frame_range": [5, 2]})
    problems = P.validate(bad)
    text = "\n".join(problems)
    for field in ("params.steps", "params.overlap", "params.passes", "params.stpes", "params.previews",
                  "params.frame_range"):
        assert field in text, (field, problems)
    with pytest.raises(P.ProtocolError) as info:
        P.check(bad)
    assert info.value.code == "invalid_params" and info.value.job == "j" and len(info.value.problems) == 6
    assert P.validate(P.submit("j", "forward", "/tmp/j", {"gbuffers": "/s"})) == [
        "field 'params.hdri': required for forward jobs"]
    assert P.validate(P.submit("j", "gbuffers", "/tmp/j", {"input": "/r", "steps": 3})) == [
        "field 'params.steps': unknown parameter for gbuffers jobs"]
    assert P.validate(P.estimate("gbuffers", {"width": 64, "height": 64, "frames": 2})) == [
        "field 'kind': 'gbuffers' is not one of inverse, forward, preview"]


@pytest.mark.parametrize("msg,code", [
    ({"type": "hello"}, "bad_message"),                                   # no version
    ({"v": "1.0"}, "bad_message"),                                        # no type
    ({"type": 3, "v": "1.0"}, "bad_message"),
    ({"type": "hello", "v": "one"}, "bad_message"),
    ({"type": "hello", "v": "2.0", "id": 5}, "version_mismatch"),
    ({"type": "hello", "v": "1.7"}, None),                                # minor is informative
    ({"type": "hello", "v": 1}, None),
    ({"type": "hello", "v": "1.0", "future_field": [1]}, None),           # additions are ignored
    ({"type": "frobnicate", "v": "1.0"}, "unknown_type"),
    ({"type": "progress", "v": "1.0", "job": "a", "stage": "denoise", "step": 1, "total": 2}, "unknown_type"),
    ({"type": "cancel", "v": "1.0"}, "invalid_params"),
    ({"type": "cancel", "v": "1.0", "job": 5}, "invalid_params"),
    ({"type": "cancel", "v": "1.0", "job": ""}, "invalid_params"),
    ({"type": "submit", "v": "1.0", "job": "a", "kind": "sideways", "job_dir": "/x", "params": {}}, "invalid_params"),
    ({"type": "submit", "v": "1.0", "job": "a", "kind": "inverse", "job_dir": "/x", "params": []}, "invalid_params"),
    ({"type": "submit", "v": "1.0", "job": "a", "kind": "inverse", "job_dir": "/x",
      "params": {"input": "x", "steps": True}}, "invalid_params"),        # a bool is not an int
])
def test_error_codes(msg, code):
    problems = P.validate(msg)
    if code is None:
        assert problems == []
        return
    assert problems
    with pytest.raises(P.ProtocolError) as info:
        P.check(msg)
    assert info.value.code == code, info.value.problems
    if code == "version_mismatch":
        assert info.value.reply_to == 5 and "major" in str(info.value)


@pytest.mark.parametrize("line,text", [
    (b"not json", "not valid JSON"),
    (b"[1, 2]", "JSON object"),
    (b'"hello"', "JSON object"),
    (b"\xff\xfe{}", "not UTF-8"),
    (b'{"type": "hello", "v": "1.0", "x": NaN}', "NaN"),
    (b"[" * 100000 + b"]" * 100000, "JSON"),
    (b"", "empty"),
    (b'{"type": "hello", "v": "3.1"}', "not compatible"),
    (b'{"type": "hello"}', "'v'"),
])
def test_decode_rejects_with_a_clear_message(line, text):
    with pytest.raises(P.ProtocolError) as info:
        P.decode(line)
    assert text in str(info.value)


def test_oversize_lines_are_refused_both_ways():
    fits = '{"type":"hello","v":"1.0","pad":"' + "x" * (P.MAX_LINE_BYTES - 40) + '"}'
    assert len(P.decode(fits)["pad"]) == P.MAX_LINE_BYTES - 40
    with pytest.raises(P.ProtocolError, match="exceeds"):
        P.decode('{"type":"hello","v":"1.0","pad":"' + "x" * P.MAX_LINE_BYTES + '"}')
    with pytest.raises(P.ProtocolError, match="exceeds"):
        P.encode({"type": "hello", "pad": "x" * P.MAX_LINE_BYTES})


def test_encode_is_one_ascii_line_and_adds_the_version():
    line = P.encode({"type": "error", "code": "internal", "message": "line1\nline2\r\u2028 ünïcode"})
    assert "\n" not in line and "\r" not in line and line.isascii()
    msg = P.decode(line)
    assert msg["v"] == P.VERSION and msg["message"] == "line1\nline2\r\u2028 ünïcode"
    with pytest.raises(P.ProtocolError):
        P.encode({"type": "progress", "eta_s": float("inf")})
    with pytest.raises(P.ProtocolError):
        P.encode({"type": "x", "obj": object()})


def test_fuzz_never_raises_anything_but_protocol_error():
    rng = random.Random(1234)
    valid = [P.encode(m) for m in (P.hello(), P.submit("j", "inverse", "/tmp/j", INV), P.cancel("j"))]
    kinds = {"ok": 0, "error": 0}
    for i in range(3000):
        r = rng.random()
        if r < 0.3:
            line = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200)))
        elif r < 0.6:
            v = rng.choice(valid)
            line = v[:rng.randrange(len(v))].encode()
        elif r < 0.8:
            v = bytearray(rng.choice(valid).encode())
            for _ in range(rng.randrange(1, 4)):
                v[rng.randrange(len(v))] = rng.randrange(32, 127)
            line = bytes(v)
        else:
            msg = json.loads(rng.choice(valid))
            key = rng.choice(list(msg))
            msg[key] = rng.choice([None, 1, -1, 2.5, True, "", "x" * 200, [], {}, [1, "a"], {"a": None}])
            line = json.dumps(msg).encode()
        try:
            P.check(P.decode(line))
            kinds["ok"] += 1
        except P.ProtocolError as exc:
            assert exc.code in P.ERROR_CODES and exc.problems and str(exc)
            kinds["error"] += 1
    assert kinds["error"] > 2500


def test_message_table_and_docs_cover_every_message():
    doc = (REPO / "docs" / "PROTOCOL.md").read_text()
    for table in P.MESSAGES.values():
        for mtype in table:
            assert f"`{mtype}`" in doc, mtype
    for code in P.ERROR_CODES:
        assert f"`{code}`" in doc, code
    for name in list(P.INVERSE_PARAMS) + list(P.FORWARD_PARAMS) + list(P.GBUFFERS_PARAMS):
        assert f"`{name}`" in doc, name
    assert "| to_engine | `submit` |" in P.message_table()


def test_every_json_example_in_the_docs_is_valid():
    doc = (REPO / "docs" / "PROTOCOL.md").read_text()
    blocks = re.findall(r"```json (to_engine|to_client)\n(.*?)```", doc, re.DOTALL)
    assert len(blocks) >= 10
    seen = set()
    for direction, body in blocks:
        for line in body.strip().splitlines():
            msg = P.decode(line)
            assert P.validate(msg, direction) == [], (direction, line)
            seen.add((direction, msg["type"]))
    assert {(d, t) for d, table in P.MESSAGES.items() for t in table} <= seen
