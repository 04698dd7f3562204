"""engine.perf: benchmark harness, reference call pattern, fast paths, memory modes, cost model.
Speed is never asserted here (benchmarks measure it); these tests check that the harness measures
the right work and that every fast path computes the same numbers."""
import json

import numpy as np
import pytest
import torch

from engine.contract import protocol
from engine.cli import main as cli_main
from engine.models import build_unet_from_config
from engine.perf import cost_model
from engine.perf.bench import FIVE, run_bench, synthetic_hdri
from engine.perf.meta_trace import trace
from engine.models.published_configs import FULL, FULL_PARAMETERS
from engine.perf.reference_pattern import reference_forward, reference_inverse
from engine.pipelines import EnvLight, ForwardRenderer, InverseRenderer
from engine.pipelines.memory import memory_plan
from engine.pipelines.random_components import build_components, configs_for
from engine.pipelines.zero_context import ZeroContextSkip

F, H, W = 3, 64, 64
GB = ("basecolor", "normal", "depth", "roughness", "metallic")


@pytest.fixture(scope="module")
def inv():
    return InverseRenderer(build_components("inverse", "tiny", device="cpu"))


@pytest.fixture(scope="module")
def fwd():
    return ForwardRenderer(build_components("forward", "tiny", device="cpu"))


@pytest.fixture(scope="module")
def clip():
    rng = np.random.default_rng(0)
    return rng.random((F, H, W, 3), dtype=np.float32), {p: rng.random((F, H, W, 3), dtype=np.float32) for p in GB}


# ------------------------------------------------------------------------------------------ models
@pytest.mark.parametrize("part", sorted(FULL_PARAMETERS))
def test_full_size_configs_have_the_published_parameter_counts(part):
    from engine.models import build_env_encoder_from_config, build_vae_from_config

    builder = {"vae": build_vae_from_config, "env_encoder": build_env_encoder_from_config}.get(part, build_unet_from_config)
    module = builder(FULL[part], device="meta")
    assert sum(p.numel() for p in module.parameters()) == FULL_PARAMETERS[part]


def test_full_size_configs_equal_the_golden_manifests():
    from golden_paths import require_golden

    for part, name in (("inverse_unet", "inverse"), ("forward_unet", "forward"), ("vae", "vae"),
                       ("env_encoder", "env-encoder")):
        manifest = json.loads(require_golden("manifests", f"manifest-{name}.json").read_text())
        ours = {k: v for k, v in FULL[part].items() if k != "_class_name"}
        assert ours == {k: v for k, v in manifest["config"].items() if k in ours} and set(manifest["config"]) <= set(ours)
        assert manifest["num_parameters"] == FULL_PARAMETERS[part]
    with pytest.raises(ValueError, match="'full' or 'tiny'"):
        configs_for("medium")


# ------------------------------------------------------------------------------------------ fast paths
def test_reference_pattern_computes_the_same_passes(inv, clip):
    video, _ = clip
    ours = inv(video, passes=FIVE, num_inference_steps=2)
    ref = reference_inverse(inv, video, FIVE, num_inference_steps=2)
    for p in FIVE:
        np.testing.assert_allclose(ref[p], ours[p], atol=1e-4)   # batch-size rounding only


def test_reference_forward_pattern_and_batched_lights_agree(fwd, clip):
    _, gb = clip
    hdrs = [synthetic_hdri(1, 32), synthetic_hdri(2, 32)]
    ours = fwd(gb, [EnvLight(h) for h in hdrs], num_inference_steps=2, env_resolution=(32, 32))
    one_by_one = fwd(gb, [EnvLight(h) for h in hdrs], num_inference_steps=2, env_resolution=(32, 32), light_batch=1)
    ref = reference_forward(fwd, gb, hdrs, num_inference_steps=2, env_resolution=(32, 32))
    assert np.abs(ours[0] - ours[1]).max() > 1e-3           # two different lights
    for a, b, c in zip(ours, one_by_one, ref):
        np.testing.assert_allclose(a, b, atol=1e-4)
        np.testing.assert_allclose(a, c, atol=1e-4)


def test_zero_context_skip_is_exact_and_only_touches_the_negatives(fwd, clip):
    _, gb = clip
    procs = [m for m in fwd.unet.modules() if isinstance(getattr(m, "processor", None), ZeroContextSkip)]
    assert len(procs) == 16                                  # every spatial cross-attention of the tiny UNet
    light = EnvLight(synthetic_hdri(3, 32))
    fast = fwd(gb, light, num_inference_steps=2, env_resolution=(32, 32))
    for m in procs:
        m.set_processor(m.processor.inner)
    try:
        full = fwd(gb, light, num_inference_steps=2, env_resolution=(32, 32))
    finally:
        for m in procs:
            m.set_processor(ZeroContextSkip(m.processor))
    np.testing.assert_allclose(fast, full, atol=1e-4)   # two attention calls instead of one: rounding only


def test_memory_modes_keep_the_numbers(clip):
    video, _ = clip
    base = InverseRenderer(build_components("inverse", "tiny", device="cpu"))
    low = InverseRenderer(build_components("inverse", "tiny", device="cpu"))
    plan = low.enable_memory_mode("low-vram")
    assert plan.ff_chunking and plan.decode_chunk == 2 and plan.unet_items == 1
    assert (low.memory, low.encode_chunk, base.encode_chunk, low.offloaded) == ("low-vram", 1, 4, False)  # CPU: no offload
    chunked = [m for m in low.unet.modules() if getattr(m, "_chunk_size", None) == 1]
    assert len(chunked) == 32                                # 16 spatial + 16 temporal transformer blocks
    assert not [m for m in base.unet.modules() if getattr(m, "_chunk_size", None)]
    vae_calls = {"encode": [], "decode": []}
    for op in vae_calls:                                     # the renderer's mode reaches the VAE calls
        original = getattr(low.vae, op)
        setattr(low.vae, op, lambda x, *a, _o=original, _n=vae_calls[op], **k: _n.append(x.shape[0]) or _o(x, *a, **k))
    kw = dict(passes=FIVE[:3], num_inference_steps=2, decode_chunk_size=F)
    a = base(video, **dict(kw, decode_chunk_size=2))       # the decode chunk low-vram caps to (overlap 0 asked)
    b = low(video, **kw)                                     # one pass per UNet batch, decode 2 frames a call
    assert vae_calls["encode"] == [1] * F and max(vae_calls["decode"]) == 2 and len(vae_calls["decode"]) >= 2 * 3
    for p in kw["passes"]:
        np.testing.assert_allclose(a[p], b[p], atol=1e-4)
    assert low.enable_memory_mode("low-vram") == plan        # same mode again: nothing changes
    with pytest.raises(ValueError, match="already runs in memory mode 'low-vram'"):
        low.enable_memory_mode("minimal")
    with pytest.raises(ValueError, match="memory mode must be one of default, low-vram, minimal"):
        memory_plan("tiny")
    assert memory_plan("low-vram").decode(8, 2) == (2, 1) and memory_plan("default").decode(8, 9) == (8, 7)


# ------------------------------------------------------------------------------------------ bench
def test_bench_counts_the_work_of_each_case():
    r = run_bench(size="tiny", width=64, height=64, frames=2, steps=2, device="cpu", repeats=1,
                  variants=("preview", "full_decode", "no_sdpa", "low_vram"), log=lambda *a: None)
    c = r["cases"]
    evals = {k: (v["unet_evals"], v["unet_batch_items"]) for k, v in c.items()}
    assert evals["inverse_1"] == (2, 2) and evals["inverse_5"] == (2, 10) and evals["ref_inverse_5"] == (10, 10)
    assert evals["forward_1"] == (2, 4) and evals["forward_2"] == (2, 8) and evals["ref_forward_2"] == (4, 8)
    assert evals["forward_1_preview"] == (2, 2)              # guidance 1.0: no negatives
    assert r["attention"] == ["AttnProcessor2_0", "ZeroContextSkip(AttnProcessor2_0)"]   # SDPA everywhere
    # FLOPs: five passes are five times the UNet work of one; the negatives' cross-attention is smaller
    assert c["inverse_5"]["unet_flops"] == pytest.approx(5 * c["inverse_1"]["unet_flops"], rel=1e-6)
    assert 1.0 < c["forward_2"]["unet_flops"] / c["forward_1"]["unet_flops"] <= 2.0 + 1e-9
    for name, v in c.items():
        st = v["stages"]
        assert sum(st.values()) == pytest.approx(v["wall_seconds"], rel=0.02, abs=2e-3), name
        assert v["peak_memory_gb"] > 0 and st["unet"] > 0
    assert c["forward_1"]["stages"]["envmap"] > 0 and c["inverse_1"]["stages"]["envmap"] == 0
    for key in ("forward_over_inverse", "batched_speedup_5_passes", "reference_forward_over_inverse"):
        assert r[key] > 0


def test_bench_cli_json(capsys):
    code = cli_main(["bench", "--tiny", "--resolution", "64x64", "--frames", "2", "--steps", "1", "--variants", "none",
                     "--no-flops", "--json", "--device", "cpu"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert {"forward_over_inverse", "batched_speedup_5_passes", "cases", "peak_tflops"} <= set(report)
    assert set(report["cases"]) == {"inverse_1", "inverse_5", "ref_inverse_1", "ref_inverse_5", "forward_1",
                                    "forward_2", "ref_forward_1", "ref_forward_2"}
    with pytest.raises(SystemExit):
        cli_main(["bench", "--variants", "warp_speed"])


# ------------------------------------------------------------------------------------------ cost model
def test_meta_trace_counts_flops_and_activation_memory():
    lin = torch.nn.Linear(64, 32, device="meta")
    x = torch.zeros(10, 64, device="meta")
    flops, peak = trace(lambda: torch.relu(lin(x)))
    assert flops == 2 * 10 * 64 * 32
    assert peak == 2 * 10 * 32 * 4                           # the linear output and the relu output
    q = torch.zeros(2, 4, 1024, 16, device="meta")
    flops, peak = trace(lambda: torch.nn.functional.scaled_dot_product_attention(q, q, q))
    assert flops == 4 * 2 * 4 * 1024 * 1024 * 16 and peak == q.numel() * 4   # no 1024² score matrix


def test_meta_trace_follows_cuda_autocast_dtypes():
    conv = torch.nn.Conv2d(8, 8, 3, padding=1, device="meta")     # float32 weights, as the VAE's
    gn = torch.nn.GroupNorm(2, 8, device="meta")
    x = torch.zeros(1, 8, 16, 16, device="meta")
    act = 8 * 16 * 16
    assert trace(lambda: conv(x))[1] == act * 4
    # autocast fp16: the input, weight and bias are cast (copies alive during the op), the output is fp16
    assert trace(lambda: conv(x), torch.float16)[1] == act * 2 + (8 * 8 * 9 + 8) * 2 + act * 2
    x16 = x.half()
    # group norm runs in float32 under autocast: an fp32 copy of the input and an fp32 output (+ mean, rstd)
    assert trace(lambda: gn(x16))[1] == act * 2 + 2 * 2 * 2
    assert trace(lambda: gn(x16), torch.float16)[1] == act * 4 + act * 4 + 2 * 2 * 4
    assert trace(lambda: conv(x), torch.float16)[0] == trace(lambda: conv(x))[0]    # same FLOPs


def test_cost_model_orders_modes_and_sizes():
    prof = cost_model.Profile("test", 100.0, 10.0, 0.01, 0.05)
    est = {m: cost_model.estimate("forward", width=512, height=512, frames=24, device="cuda", memory=m, profile=prof,
                                  device_memory_gb=24) for m in ("default", "low-vram", "minimal")}
    assert est["default"]["peak_memory_gb"] > est["low-vram"]["peak_memory_gb"] > est["minimal"]["peak_memory_gb"]
    assert est["minimal"]["seconds"] > est["default"]["seconds"]
    assert est["default"]["unet_evals"] == 20 and est["default"]["unet_batch"] == 2 and est["default"]["fits"]
    inv = cost_model.estimate("inverse", width=512, height=512, frames=24, passes=1, device="cuda", profile=prof)
    assert inv["unet_tflop"] == pytest.approx(20 * 29.20, rel=1e-3)   # 29.20 TFLOP per 512²×24 inverse UNet call
    longer = cost_model.estimate("inverse", width=512, height=512, frames=48, passes=1, device="cuda", profile=prof)
    assert longer["windows"] == 3 and longer["seconds"] > 2 * inv["seconds"]
    with pytest.raises(ValueError, match="multiple of 64"):
        cost_model.estimate("inverse", width=500, height=512, frames=24, device="cuda", profile=prof)


def test_estimate_over_the_protocol():
    from engine.jobs.job_estimate import estimate_job

    msg = protocol.estimate("forward", {"width": 1920, "height": 1080, "frames": 30, "lights": 2},
                            {"steps": 10, "memory": "low-vram", "device": "cuda"}, id=7)
    assert protocol.validate(msg) == []
    est = estimate_job(msg["kind"], msg["size"], msg["params"], profile=cost_model.Profile("t", 100, 10, 0.01, 0.05))
    reply = protocol.estimate_reply("forward", est, reply_to=7)
    assert protocol.validate(reply, protocol.TO_CLIENT) == []
    assert reply["detail"]["lights"] == 2 and reply["detail"]["windows"] == 2 and reply["detail"]["memory"] == "low-vram"
    bad = protocol.estimate("inverse", {"width": 0, "height": 64, "frames": 2}, {"memory": "huge"})
    assert any("size.width" in p for p in protocol.validate(bad)) and any("params.memory" in p for p in protocol.validate(bad))


def test_merged_lora_matches_the_unmerged_layers_and_restores_the_weights(fwd, clip):
    _, gb = clip
    light = EnvLight(synthetic_hdri(4, 32))
    before = {k: v.clone() for k, v in fwd.unet.state_dict().items()}
    merged = fwd(gb, light, num_inference_steps=2, env_resolution=(32, 32), lora_scale=0.5)
    fwd.merge_lora = False
    try:
        unmerged = fwd(gb, light, num_inference_steps=2, env_resolution=(32, 32), lora_scale=0.5)
    finally:
        fwd.merge_lora = True
    np.testing.assert_allclose(merged, unmerged, atol=1e-4)
    assert all(torch.equal(before[k], v) for k, v in fwd.unet.state_dict().items())   # no drift
    assert not any(layer.merged_adapters for layer in fwd.unet.lora_layers())
    other = fwd(gb, light, num_inference_steps=2, env_resolution=(32, 32), lora_scale=0.0)
    assert np.abs(other - merged).max() > 1e-3                                       # the scale still acts


def test_cube_map_cache_is_keyed_by_content_and_settings(monkeypatch):
    from engine.envmap import cube_cache, process_environment_map
    from engine.envmap import projection

    cube_cache.clear()
    built = []
    real = projection.latlong_to_cubemap
    monkeypatch.setattr(projection, "latlong_to_cubemap", lambda *a, **k: built.append(1) or real(*a, **k))
    hdr = synthetic_hdri(5, 32)
    kw = dict(resolution=(16, 16), num_frames=2, cube_resolution=32)
    a = process_environment_map(hdr, **kw)
    b = process_environment_map(hdr.copy(), **kw)                 # same content, another array: a hit
    assert len(built) == 1 and torch.equal(a["env_ldr"], b["env_ldr"]) and torch.equal(a["env_log"], b["env_log"])
    process_environment_map(hdr, env_strength=2.0, **kw)           # other settings: a new cube
    edited = hdr.copy()
    edited[0, 0] += 1.0
    process_environment_map(edited, **kw)                          # edited pixels: never served stale
    process_environment_map(hdr, cache=False, **kw)                # the reference pattern: always rebuilt
    assert len(built) == 4
