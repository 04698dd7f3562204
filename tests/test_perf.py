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


# ------------------------------------------------------------------------------------------ N GPUs (cluster)
PROF = cost_model.Profile("t", 100.0, 10.0, 0.01, 0.05)
SHOT = {"width": 512, "height": 512, "frames": 300, "passes": 5, "lights": 3}


@pytest.mark.parametrize("kind", ["inverse", "forward"])
def test_estimate_on_gpus_is_todays_on_one_and_falls_with_more(kind):
    from engine.jobs.job_estimate import estimate_job

    params = {"device": "cuda"}
    today = estimate_job(kind, SHOT, params, profile=PROF)
    assert estimate_job(kind, SHOT, params, profile=PROF, gpus=1) == today and "cluster" not in today
    rows = {n: estimate_job(kind, SHOT, params, profile=PROF, gpus=n) for n in (2, 4, 8)}
    secs = [today["seconds"]] + [rows[n]["seconds"] for n in (2, 4, 8)]
    assert secs == sorted(secs, reverse=True) and len(set(secs)) == 4       # strictly faster with more GPUs
    for n, r in rows.items():
        c = r["cluster"]
        assert c["seconds_one_gpu"] == pytest.approx(today["seconds"], abs=0.02)
        assert 1.0 < c["speedup"] < n                                       # start-up and idle workers cost
        assert c["seconds"] == pytest.approx(c["startup_s"] + c["compute_s"], abs=0.02)
        assert c["units"] == 5 * (3 if kind == "forward" else 1)           # 17 windows → 5 segments (× 3 HDRIs)
        assert r["peak_memory_gb"] == today["peak_memory_gb"]              # per worker: one job's memory


def test_cluster_units_add_up_to_the_one_gpu_time_and_are_scheduled():
    from engine.perf.cluster_cost import ClusterCosts, cluster_estimate

    one = cost_model.estimate("inverse", width=512, height=512, frames=300, passes=5, device="cuda", profile=PROF)
    free = ClusterCosts(0, 0, 1e9, 0, 0, 1e9)                  # no start-up, no overheads, instant exchange
    geo = dict(frames=300, window=24, overlap=6, windows_per_segment=4, steps=20, costs=free, latent_hw=(64, 64),
               exchange_items=5)
    seq = cluster_estimate(one, gpus=1, split="segments", **geo)
    assert seq["windows_per_segment"] == [4, 4, 4, 4, 1] and seq["startup_s"] == 0
    assert seq["compute_s"] == pytest.approx(one["seconds"], abs=0.02)     # the units partition the job
    wide = cluster_estimate(one, gpus=8, split="segments", **geo)
    unet, other = one["seconds_by_part"]["unet"], one["seconds_by_part"]["encode_decode"]
    a = unet * 4 / 17 + other * 78 / 336        # segments 0-3: 4 of 17 windows, 78 of the segments' 336 frames
    b = unet * 1 / 17 + other * 24 / 336        # segment 4: the last window
    assert wide["compute_s"] == pytest.approx(a, abs=0.02)                 # 5 units on 8 GPUs: the longest one
    two = cluster_estimate(one, gpus=2, split="segments", **geo)
    assert two["compute_s"] == pytest.approx(2 * a + b, abs=0.02)          # in order to the first free worker
    win = cluster_estimate(one, gpus=4, split="windows", **geo)            # 4 ranks: one window each per segment
    assert win["compute_s"] == pytest.approx(unet * 5 / 17 + other, abs=0.02)
    costly = cluster_estimate(one, gpus=4, split="windows", **{**geo, "costs": ClusterCosts(0, 0, 1e9, 0, 1.0, 1e9)})
    assert costly["compute_s"] == pytest.approx(win["compute_s"] + 4 * 20 * 1.0, abs=0.02)  # 4 split segments × 20 steps
    auto = cluster_estimate(one, gpus=8, split="auto", **geo)
    assert auto["split"] == min(auto["by_split"], key=auto["by_split"].get)
    assert win["exchange_mb_per_boundary_step"] == pytest.approx(1.966, abs=1e-3)  # 6 frames × 4 × 64² × fp32 × 5
    with pytest.raises(ValueError, match="split"):
        cluster_estimate(one, gpus=2, split="frames", **geo)


def test_estimate_gpu_table_command(capsys):
    code = cli_main(["estimate", "forward", "--size", "512x512", "--frames", "300", "--lights", "3", "--device", "cuda",
                     "--gpus", "1,2,4,8"])
    assert code == 0
    rows = [line.split("|")[1:-1] for line in capsys.readouterr().out.splitlines() if line[:3] in ("| 1", "| 2", "| 4", "| 8")]
    assert [int(r[0]) for r in rows] == [1, 2, 4, 8]
    totals = [float(r[5]) for r in rows]
    assert totals == sorted(totals, reverse=True)
    assert rows[0][1].strip().startswith("—") and rows[3][2].strip() == "15"
    with pytest.raises(SystemExit):
        cli_main(["estimate", "inverse", "--size", "512x512", "--frames", "30", "--gpus", "0"])


def test_cluster_bench_harness_runs_both_jobs_and_compares_outputs(monkeypatch):
    """The harness around the jobs (inputs, runs, output comparison); the jobs here run in this process."""
    from engine.perf import cluster_bench

    monkeypatch.setattr(cluster_bench, "_needs_cluster_setting", lambda kind: None)
    r = cluster_bench.run_cluster_bench("local:2", kinds=("inverse",), frames=6, width=64, height=64, steps=1,
                                        window=4, overlap=1, log=lambda *a: None)
    j = r["jobs"]["inverse"]
    assert j["bit_identical"] is True and j["speedup"] > 0 and j["cluster"]["spec"] == "local:2"
    a = {"x.exr": {"R": np.zeros(3, np.float32)}}
    assert cluster_bench._identical(a, {"x.exr": {"R": np.zeros(3, np.float32)}})
    assert not cluster_bench._identical(a, {"x.exr": {"R": np.full(3, 1e-7, np.float32)}})
    assert not cluster_bench._identical({}, {})                     # nothing written is not "identical"


def test_bench_cluster_runs_the_jobs_on_a_local_cluster(capsys):
    import dataclasses

    from engine.jobs.settings import settings_class

    if "cluster" not in {f.name for f in dataclasses.fields(settings_class("inverse")[0])}:
        with pytest.raises(SystemExit, match="no cluster/split settings"):
            cli_main(["bench", "--cluster", "local:2"])
        return
    pytest.importorskip("ray")
    assert cli_main(["bench", "--cluster", "local:2", "--frames", "16", "--steps", "1", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert set(r["jobs"]) == {"inverse", "forward"}
    assert all(j["bit_identical"] and j["speedup"] > 0 for j in r["jobs"].values())
