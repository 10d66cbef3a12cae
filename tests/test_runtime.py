"""The runtime (`limner.runtime`): CPU detection, the automatic choice of precision, the
fast path's images against the fp32 reference path, and the VAE and memory fallbacks."""

from __future__ import annotations

import json
import math
import platform
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor2_0

from limner import api
from limner.errors import InvalidRequestError
from limner.pipelines import steps
from limner.runtime.device import (
    DeepCacheOptions,
    Precision,
    RuntimeOptions,
    bf16_speedup,
    cached_bf16_speedup,
    detect_cpu,
    resolve_runtime,
)
from limner.runtime.prepare import prepare_model
from tiny_models import bundle, sd1_components

FLAGS_BF16 = "fpu sse avx2 avx512f avx512_bf16 amx_bf16 amx_tile"
FLAGS_PLAIN = "fpu sse avx2 avx512f"
FLAGS_AVX512_BF16 = "fpu sse avx2 avx512f avx512_bf16"  # bf16 dot products, no AMX


def cpuinfo(flags: str, topology: list[tuple[int, int]]) -> str:
    """A /proc/cpuinfo with one block per (physical id, core id)."""
    blocks = []
    for i, (package, core) in enumerate(topology):
        blocks.append(
            f"processor\t: {i}\nmodel name\t: Test CPU\nphysical id\t: {package}\n"
            f"core id\t\t: {core}\nflags\t\t: {flags}\n"
        )
    return "\n".join(blocks)


# -- detection and choice -------------------------------------------------------------


def test_detect_counts_physical_cores_not_smt_siblings():
    # two cores with two hyperthreads each
    info = cpuinfo(FLAGS_BF16, [(0, 0), (0, 1), (0, 0), (0, 1)])
    cpu = detect_cpu(info, allowed_cpus={0, 1, 2, 3}, cpu_quota=math.inf)
    assert (cpu.physical_cores, cpu.logical_cpus) == (2, 4)
    assert cpu.has_bf16 and cpu.has_amx_bf16


def test_detect_respects_affinity_and_cgroup_quota():
    info = cpuinfo(FLAGS_PLAIN, [(0, c) for c in range(8)])
    assert detect_cpu(info, allowed_cpus={0, 1, 2}, cpu_quota=math.inf).physical_cores == 3
    assert detect_cpu(info, allowed_cpus=set(range(8)), cpu_quota=1.5).physical_cores == 2
    assert not detect_cpu(info, allowed_cpus=set(), cpu_quota=math.inf).has_bf16


def test_auto_precision_follows_bf16_units():
    with_units = detect_cpu(cpuinfo(FLAGS_BF16, [(0, 0)]), allowed_cpus={0}, cpu_quota=math.inf)
    without = detect_cpu(cpuinfo(FLAGS_PLAIN, [(0, 0)]), allowed_cpus={0}, cpu_quota=math.inf)
    assert resolve_runtime(RuntimeOptions(), with_units).dtype == torch.bfloat16
    assert resolve_runtime(RuntimeOptions(), without).dtype == torch.float32
    forced = resolve_runtime(RuntimeOptions(precision="bf16"), without)
    assert forced.dtype == torch.bfloat16
    assert any("slower" in note for note in forced.notes)
    assert resolve_runtime(RuntimeOptions(precision="fp32"), with_units).dtype == torch.float32
    assert resolve_runtime(RuntimeOptions(threads=3), without).threads == 3


def _never_measured(cpu, threads):
    raise AssertionError("the bf16 rate was measured where the flags decide")


def test_auto_precision_measures_only_where_flags_cannot_decide(tmp_path):
    def one(flags):
        return detect_cpu(cpuinfo(flags, [(0, 0)]), allowed_cpus={0}, cpu_quota=math.inf)

    amx, plain, avx512 = one(FLAGS_BF16), one(FLAGS_PLAIN), one(FLAGS_AVX512_BF16)
    assert resolve_runtime(RuntimeOptions(), amx, _never_measured).dtype == torch.bfloat16
    assert resolve_runtime(RuntimeOptions(), plain, _never_measured).dtype == torch.float32
    # AVX512-BF16 without AMX: faster on some parts (Zen 4), slower on others
    fast = resolve_runtime(RuntimeOptions(), avx512, lambda cpu, threads: 2.0)
    slow = resolve_runtime(RuntimeOptions(), avx512, lambda cpu, threads: 0.55)
    assert (fast.dtype, slow.dtype) == (torch.bfloat16, torch.float32)
    assert "0.55x" in slow.notes[0] and "2.00x" in fast.notes[0]
    # asked for with the threads it will run with
    asked = []
    resolve_runtime(RuntimeOptions(threads=3), avx512, lambda c, t: asked.append(t) or 1.0)
    assert asked == [3]
    # an explicit choice is never second-guessed
    forced = RuntimeOptions(precision="bf16")
    assert resolve_runtime(forced, avx512, _never_measured).dtype == torch.bfloat16


def test_bf16_speedup_is_measured_once_per_cpu_and_threads(tmp_path):
    cpu = detect_cpu(cpuinfo(FLAGS_AVX512_BF16, [(0, 0)]), allowed_cpus={0}, cpu_quota=1)
    cache = tmp_path / "cache" / "bf16-speedup.json"
    calls = []

    def measure(threads):
        calls.append(threads)
        return 0.5 + threads

    assert cached_bf16_speedup(cpu, 1, measure, cache) == 1.5
    assert cached_bf16_speedup(cpu, 1, measure, cache) == 1.5
    assert cached_bf16_speedup(cpu, 2, measure, cache) == 2.5
    assert calls == [1, 2]
    other = detect_cpu(cpuinfo(FLAGS_BF16, [(0, 0)]), allowed_cpus={0}, cpu_quota=1)
    assert cached_bf16_speedup(other, 1, measure, cache) == 1.5 and calls == [1, 2, 1]
    # a damaged cache file is measured again and rewritten, not an error
    cache.write_text("{not json")
    assert cached_bf16_speedup(cpu, 1, measure, cache) == 1.5 and len(calls) == 4
    assert json.loads(cache.read_text())[cpu.key(1)] == 1.5


def test_bf16_speedup_measures_a_positive_ratio_and_restores_threads():
    before = torch.get_num_threads()
    ratio = bf16_speedup(1, rounds=1)
    assert ratio > 0 and math.isfinite(ratio)
    assert torch.get_num_threads() == before


def test_runtime_options_round_trip_and_errors():
    options = RuntimeOptions(
        precision="bf16", deepcache=DeepCacheOptions(interval=3, branch=1), threads=2
    )
    assert RuntimeOptions.from_json(options.to_json()) == options
    assert options.precision is Precision.BF16
    with pytest.raises(InvalidRequestError, match="precision"):
        RuntimeOptions(precision="fp8")
    with pytest.raises(InvalidRequestError, match="unknown runtime options"):
        RuntimeOptions.from_dict({"turbo": True})
    with pytest.raises(InvalidRequestError, match="tiny decoder"):
        RuntimeOptions(fast_decode=True)
    with pytest.raises(InvalidRequestError, match="threads"):
        RuntimeOptions(threads=0)


# -- the fast path gives the reference path's images ---------------------------------


def _options(precision: str, channels_last: bool = True) -> RuntimeOptions:
    return RuntimeOptions(precision=precision, channels_last=channels_last)


def test_prepare_model_sets_dtype_layout_and_attention(tmp_path):
    model = bundle(sd1_components(tmp_path))
    prepare_model(model, resolve_runtime(_options("bf16")))
    assert model.unet.dtype == torch.bfloat16 and model.vae.dtype == torch.bfloat16
    conv = model.unet.conv_in.weight
    assert conv.is_contiguous(memory_format=torch.channels_last)
    assert not conv.is_contiguous()
    processors = list(model.unet.attn_processors.values()) + list(
        model.vae.attn_processors.values()
    )
    assert processors and all(isinstance(p, AttnProcessor2_0) for p in processors)


def _pixels(model_name: str, options: RuntimeOptions, model=None, **fields) -> np.ndarray:
    request = api.GenerationRequest(
        **{"prompt": "a red apple", "model": model_name, "steps": 4, "seed": 7, **fields}
    )
    image = api.generate(request, model=model, runtime=options)[0].image
    return np.asarray(image).astype(np.float32)


@pytest.mark.parametrize("sampler", ["DPM++ 2M", "Euler a"])
def test_fast_path_matches_reference_path(tiny_sd1, sampler):
    reference = _pixels(tiny_sd1, RuntimeOptions.reference(), sampler=sampler)
    layout = _pixels(tiny_sd1, _options("fp32"), sampler=sampler)
    fast = _pixels(tiny_sd1, _options("bf16"), sampler=sampler)
    # fp32 in channels-last: the same numbers up to summation order
    assert np.abs(layout - reference).max() <= 2.0
    # bf16 (8-bit mantissa): close on average, a few levels at most in most pixels
    difference = np.abs(fast - reference)
    assert difference.mean() < 4.0, difference.mean()
    assert np.percentile(difference, 99) < 24.0
    assert reference.std() > 2.0


def test_fast_path_matches_reference_on_sdxl(tiny_sdxl):
    reference = _pixels(tiny_sdxl, RuntimeOptions.reference())
    fast = _pixels(tiny_sdxl, _options("bf16"))
    assert np.abs(fast - reference).mean() < 4.0


@pytest.mark.slow  # compiles the tiny UNet: about a minute on two cores
def test_compiled_unet_gives_the_eager_image(tiny_sd1):
    # fp32, where only the summation order may differ (bf16 compiles the same graph; the
    # bench measures it at full size): frozen weights, fused bias and activation
    eager = _pixels(tiny_sd1, _options("fp32"))
    options = RuntimeOptions(precision="fp32", compile=True)
    model = api.load(tiny_sd1, runtime=options)
    compiled = _pixels(tiny_sd1, options, model=model)
    difference = np.abs(compiled - eager)
    assert difference.mean() < 0.5, difference.mean()
    assert np.percentile(difference, 99) < 4.0
    assert eager.std() > 2.0
    # frozen: the graph holds its own copy of the weights, so a later change to the
    # module's is not seen (an unfrozen graph would read the zeroed layer)
    weight = model.unet.conv_out.weight
    kept = weight.detach().clone()
    with torch.no_grad():
        weight.zero_()
    try:
        again = _pixels(tiny_sd1, options, model=model)
    finally:
        with torch.no_grad():
            weight.copy_(kept)
    assert np.array_equal(again, compiled)


def _eager(model):
    """`model` with its compiled UNet's own module: the same weights, run eagerly."""
    import dataclasses

    return dataclasses.replace(model, unet=model.unet._orig_mod)


@pytest.mark.slow  # compiles the tiny UNet
def test_compiled_unet_with_deepcache_gives_the_eager_images(tiny_sd1):
    # DeepCache keeps the deep features through hooks installed before compiling, so the
    # graph writes them too: in this process the UNet class was compiled without DeepCache
    # before (the test above, as a server's earlier request), and the model is used
    # without it first.
    from limner.runtime.device import DeepCacheOptions

    cache = DeepCacheOptions(interval=2, branch=0)
    eager_options = RuntimeOptions(precision="fp32", deepcache=cache)
    options = RuntimeOptions(precision="fp32", deepcache=cache, compile=True)
    model = api.load(tiny_sd1, runtime=options)
    _pixels(tiny_sd1, RuntimeOptions(precision="fp32", compile=True), model=model, steps=2)
    images = []
    for seed in (7, 8):
        eager = _pixels(tiny_sd1, eager_options, seed=seed, steps=6)
        compiled = _pixels(tiny_sd1, options, model=model, seed=seed, steps=6)
        difference = np.abs(compiled - eager)
        assert difference.mean() < 0.5, (seed, difference.mean())
        assert np.percentile(difference, 99) < 4.0, seed
        images.append(compiled)
    # and the full steps ran compiled: the frozen graph does not see a change to a weight
    # of the deep part (which only full steps run); the module's eager forward would
    weight = model.unet.mid_block.resnets[0].conv1.weight
    kept = weight.detach().clone()
    with torch.no_grad():
        weight.zero_()
    try:
        again = _pixels(tiny_sd1, options, model=model, seed=8, steps=6)
        eager_zeroed = _pixels(tiny_sd1, eager_options, model=_eager(model), seed=8, steps=6)
    finally:
        with torch.no_grad():
            weight.copy_(kept)
    assert np.array_equal(again, images[1])
    assert np.abs(eager_zeroed - images[1]).mean() > 1.0


@pytest.mark.slow  # compiles the built-in UNet: about two minutes on two cores
def test_compiled_unet_with_token_merging_gives_the_eager_images():
    # Real inductor, frozen weights, fp32, on the built-in model (the tiny test models have
    # no attention at full resolution, so nothing to merge). The destinations come from
    # each image's seed through a table outside the UNet, so a second seed's image is
    # its own too.
    def pixels(options, model=None, seed=7):
        return _pixels(None, options, model=model, seed=seed, steps=3, guidance_scale=5)

    eager_options = RuntimeOptions(precision="fp32", token_merging=0.5)
    options = RuntimeOptions(precision="fp32", token_merging=0.5, compile=True)
    model = api.load(None, runtime=options)
    images = []
    for seed in (7, 8):
        eager = pixels(eager_options, seed=seed)
        compiled = pixels(options, model=model, seed=seed)
        difference = np.abs(compiled - eager)
        assert difference.mean() < 0.5, (seed, difference.mean())
        assert np.percentile(difference, 99) < 4.0, seed
        images.append(compiled)
    assert not np.array_equal(*images)
    # and the merge is there to compare: without it the image is another
    plain = pixels(RuntimeOptions(precision="fp32"), seed=8)
    assert np.abs(plain - eager).mean() > 1.0


def test_default_runtime_is_automatic(tiny_sd1):
    model = api.load(tiny_sd1)
    expected = resolve_runtime(RuntimeOptions()).dtype
    assert model.unet.dtype == expected
    assert api.load(tiny_sd1, runtime=RuntimeOptions.reference()).unet.dtype == torch.float32


# -- VAE fallbacks -------------------------------------------------------------------


def test_vae_decodes_again_in_fp32_when_bf16_gives_nan(tmp_path):
    model = bundle(sd1_components(tmp_path))
    prepare_model(model, resolve_runtime(_options("bf16")))

    def poison(module, args, output):  # what an overflowing half-precision VAE does
        return torch.full_like(output, float("nan")) if output.dtype != torch.float32 else output

    handle = model.vae.decoder.register_forward_hook(poison)
    latents = torch.randn(1, 4, 32, 32, dtype=torch.bfloat16)
    try:
        with pytest.warns(UserWarning, match="fp32"):
            pixels = steps.decode_latents(model, latents)
    finally:
        handle.remove()
    assert torch.isfinite(pixels).all()
    assert model.vae.dtype == torch.float32  # stays in fp32 for the next images
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        steps.decode_latents(model, latents)  # no second warning


def test_vae_tiles_only_large_images(tmp_path, monkeypatch):
    # The real threshold is 1024x1024 pixels; a smaller one keeps the test fast.
    monkeypatch.setattr(steps, "TILING_PIXELS", 64 * 64)
    model = bundle(sd1_components(tmp_path))
    calls = []
    original = model.vae.tiled_decode
    model.vae.tiled_decode = lambda *a, **k: calls.append(1) or original(*a, **k)
    f = model.vae_scale_factor
    steps.decode_latents(model, torch.randn(1, 4, 64 // f, 64 // f))
    assert calls == []
    pixels = steps.decode_latents(model, torch.randn(1, 4, 96 // f, 96 // f))
    assert calls and pixels.shape[-2:] == (96, 96)
    assert torch.isfinite(pixels).all()


# -- memory ----------------------------------------------------------------------------


def test_text_encoder_released_and_reloaded(tiny_sd1):
    options = RuntimeOptions(precision="fp32", release_text_encoder=True)
    first = _pixels(tiny_sd1, options)
    model = api.load(tiny_sd1, runtime=RuntimeOptions(precision="fp32"))
    # the cached model was released and is loaded again; run once more, then check
    assert not steps.text_encoders_released(model)
    second = _pixels(tiny_sd1, options)
    released = api._cache and next(iter(api._cache.values()))
    assert steps.text_encoders_released(released)
    np.testing.assert_array_equal(first, second)
    kept = _pixels(tiny_sd1, RuntimeOptions(precision="fp32", release_text_encoder=False))
    np.testing.assert_array_equal(first, kept)


def test_text_encoder_released_after_the_last_batch_and_never_from_a_callers_model(tiny_sd1):
    options = RuntimeOptions(precision="fp32", release_text_encoder=True)
    request = api.GenerationRequest(
        prompt="a red apple", model=tiny_sd1, steps=2, seed=3, batch_count=2
    )
    first, second = api.generate(request, runtime=options)  # both batches encode the prompt
    assert steps.text_encoders_released(next(iter(api._cache.values())))
    own = api.load(tiny_sd1, runtime=options)  # released, so loaded again
    assert not steps.text_encoders_released(own)
    again = api.generate(request, model=own, runtime=options)
    assert not steps.text_encoders_released(own)  # the caller's model stays whole
    np.testing.assert_array_equal(np.asarray(again[1].image), np.asarray(second.image))


def test_batched_requests_release_their_own_model_and_match_unreleased(tiny_sd1):
    # generate_many joins one-image requests into batches; with release on, each batch
    # may free the text encoder of the model it loaded, and the next batch loads it again.
    requests = [
        api.GenerationRequest(prompt=p, model=tiny_sd1, steps=2, seed=i)
        for i, p in enumerate(["a red apple", "a blue boat", "a green tree", "a cat"])
    ]
    released = RuntimeOptions(precision="fp32", release_text_encoder=True)
    kept = RuntimeOptions(precision="fp32", release_text_encoder=False)
    many = api.generate_many(requests, max_batch=2, runtime=released)
    assert steps.text_encoders_released(next(iter(api._cache.values())))
    reference = api.generate_many(requests, max_batch=2, runtime=kept)
    for a, b in zip(many, reference, strict=True):
        np.testing.assert_array_equal(np.asarray(a[0].image), np.asarray(b[0].image))


_PEAK_PROBE = """
import sys
import torch
from limner.runtime.memory import peak_rss_bytes, reset_peak_rss
if not reset_peak_rss():
    sys.exit(3)
before = peak_rss_bytes()
block = torch.ones(64 * 1024 * 1024 // 4)  # 64 MiB, touched
print(peak_rss_bytes() - before)
"""


def test_peak_rss_is_measured():
    # A fresh process: in a long test session the allocator may hand back pages that are
    # already resident, and the peak would not move.
    probe = subprocess.run([sys.executable, "-c", _PEAK_PROBE], capture_output=True, text=True)
    if probe.returncode == 3:
        pytest.skip("no /proc/self/clear_refs on this system")
    assert probe.returncode == 0, probe.stderr
    assert int(probe.stdout) >= 60 * 1024 * 1024


def test_png_records_the_runtime_and_from_reuses_it(tiny_sd1, tmp_path):
    options = RuntimeOptions(precision="bf16", deepcache=DeepCacheOptions(interval=2))
    request = api.GenerationRequest(prompt="a red apple", model=tiny_sd1, steps=4, seed=9)
    [image] = api.generate(request, runtime=options)
    [path] = api.save_images([image], tmp_path / "a.png")
    stored = api.image_info(path).request["runtime"]
    assert stored["precision"] == "bf16"
    assert stored["deepcache"] == {"interval": 2, "branch": 0}
    again = api.generate_from(path)  # no runtime given: the stored one
    np.testing.assert_array_equal(np.asarray(again.image), np.asarray(image.image))
    other = api.generate_from(path, runtime=RuntimeOptions.reference())
    assert not np.array_equal(np.asarray(other.image), np.asarray(image.image))


def test_deepcache_flag_alone_uses_the_default_interval():
    import argparse

    from limner.runtime.cli_options import add_speed_arguments, runtime_from_args

    parser = argparse.ArgumentParser()
    add_speed_arguments(parser)
    assert runtime_from_args(parser.parse_args([])).deepcache is None
    bare = runtime_from_args(parser.parse_args(["--deepcache"])).deepcache
    assert bare == DeepCacheOptions(interval=2, branch=0) == DeepCacheOptions()
    given = runtime_from_args(parser.parse_args(["--deepcache", "3", "--deepcache-branch", "1"]))
    assert given.deepcache == DeepCacheOptions(interval=3, branch=1)


# -- fp16 weight storage (--low-memory) ------------------------------------------------


def test_fp16_weights_are_stored_in_fp16_and_computed_in_fp32(tmp_path):
    from limner.runtime.prepare import stores_fp16_weights

    model = bundle(sd1_components(tmp_path))
    runtime = resolve_runtime(RuntimeOptions(precision="fp32", fp16_weights=True))
    assert runtime.fp16_weights and runtime.storage_dtype == torch.float16
    prepare_model(model, runtime)
    assert stores_fp16_weights(model.unet) and stores_fp16_weights(model.vae)
    assert model.unet.conv_in.weight.dtype == torch.float16
    assert model.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert model.vae.decoder.conv_out.weight.dtype == torch.float16
    # normalisations stay in the compute dtype, and the model says what it computes in
    assert model.unet.conv_norm_out.weight.dtype == torch.float32
    assert model.unet.dtype == torch.float32
    latents = torch.randn(1, 4, 8, 8)
    context = torch.randn(1, 77, model.unet.config.cross_attention_dim)
    with torch.no_grad():
        out = model.unet(latents, torch.tensor([10]), context).sample
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert model.unet.conv_in.weight.dtype == torch.float16  # cast back after the call


def test_fp16_weights_hand_large_blocks_back_to_the_system(tmp_path, monkeypatch):
    import limner.runtime.prepare as prepare

    calls = []
    monkeypatch.setattr(prepare, "return_large_blocks_to_the_system", lambda: calls.append(1))
    prepare_model(
        bundle(sd1_components(tmp_path)), resolve_runtime(RuntimeOptions(precision="fp32"))
    )
    assert calls == []  # fp32 weights: glibc's defaults stay
    fp16 = resolve_runtime(RuntimeOptions(precision="fp32", fp16_weights=True))
    prepare_model(bundle(sd1_components(tmp_path / "b")), fp16)
    assert calls == [1]
    if sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc":
        # the real call, in a process of its own: it changes the allocator for good
        probe = (
            "from limner.runtime.memory import return_large_blocks_to_the_system as r; print(r())"
        )
        out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
        assert out.stdout.strip() == "True", out.stderr


def test_fp16_weights_only_for_fp32_compute_and_not_with_compile():
    bf16 = resolve_runtime(RuntimeOptions(precision="bf16", fp16_weights=True))
    assert not bf16.fp16_weights and bf16.storage_dtype == torch.bfloat16
    with pytest.raises(InvalidRequestError, match="compile"):
        RuntimeOptions(fp16_weights=True, compile=True)
    options = RuntimeOptions(precision="fp32", fp16_weights=True)
    assert RuntimeOptions.from_json(options.to_json()) == options
    assert options.model_key() != RuntimeOptions(precision="fp32").model_key()


def test_fp16_weights_are_chosen_when_memory_is_tight(monkeypatch):
    from limner.runtime import memory

    monkeypatch.setattr(memory, "memory_is_tight", lambda: True)
    tight = resolve_runtime(RuntimeOptions(precision="fp32"))
    assert tight.fp16_weights and any("fp16 weights" in n for n in tight.notes)
    assert not resolve_runtime(RuntimeOptions(precision="fp32", fp16_weights=False)).fp16_weights
    monkeypatch.setattr(memory, "memory_is_tight", lambda: False)
    assert not resolve_runtime(RuntimeOptions(precision="fp32")).fp16_weights


def test_fp16_weights_give_the_fp32_image(tiny_sd1, tmp_path):
    reference = _pixels(tiny_sd1, _options("fp32"))
    options = RuntimeOptions(precision="fp32", fp16_weights=True)
    stored = _pixels(tiny_sd1, options)
    # the tiny model's fp32 weights rounded to fp16 (11-bit mantissa), fp32 arithmetic
    difference = np.abs(stored - reference)
    assert difference.mean() < 1.0, difference.mean()
    assert difference.max() <= 16.0
    assert reference.std() > 2.0
    # the record says so, and remaking the image from its PNG uses fp16 weights again
    request = api.GenerationRequest(prompt="a red apple", model=tiny_sd1, steps=4, seed=7)
    [image] = api.generate(request, runtime=options)
    [path] = api.save_images([image], tmp_path / "a.png")
    assert api.image_info(path).request["runtime"]["fp16_weights"] is True
    again = api.generate_from(path)
    np.testing.assert_array_equal(np.asarray(again.image), np.asarray(image.image))


def test_low_memory_flag_releases_the_text_encoder_and_stores_fp16_weights():
    import argparse

    from limner.runtime.cli_options import add_speed_arguments, runtime_from_args

    parser = argparse.ArgumentParser()
    add_speed_arguments(parser)
    default = runtime_from_args(parser.parse_args([]))
    assert default.release_text_encoder is None and default.fp16_weights is None
    low = runtime_from_args(parser.parse_args(["--low-memory"]))
    assert low.release_text_encoder is True and low.fp16_weights is True
