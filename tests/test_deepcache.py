"""DeepCache (`limner.runtime.deepcache`): a cached call is exact when the UNet's input did
not change, the cadence of full calls is the interval, and generation through the API
uses it and stays close to the full computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from limner import api
from limner.checkpoints.arch import ArchInfo
from limner.checkpoints.tiny import build_tiny_components
from limner.errors import InvalidRequestError
from limner.runtime.deepcache import DeepCacheUNet
from limner.runtime.device import DeepCacheOptions, RuntimeOptions
from tiny_models import sd1_components, sdxl_components


@pytest.fixture(scope="module")
def unets(tmp_path_factory):
    """UNets of several layouts: the real SD 1.x and SDXL block patterns at toy widths
    (cross-attention in the first down and last up block for SD 1.x, none for SDXL), and
    the test models' own."""
    return {
        "sd1": build_tiny_components(ArchInfo("sd1"), seed=1)["unet"],
        "sdxl": build_tiny_components(ArchInfo("sdxl"), seed=1)["unet"],
        "test-sd1": sd1_components(tmp_path_factory.mktemp("a"))["unet"],
        "test-sdxl": sdxl_components(tmp_path_factory.mktemp("b"))["unet"],
    }


def _inputs(unet, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    config = unet.config
    size = 8
    x = torch.randn(batch, config.in_channels, size, size, generator=g)
    context = torch.randn(batch, 7, config.cross_attention_dim, generator=g)
    added = None
    if config.addition_embed_type == "text_time":
        pooled = config.projection_class_embeddings_input_dim - 6 * config.addition_time_embed_dim
        added = {
            "text_embeds": torch.randn(batch, pooled, generator=g),
            "time_ids": torch.randn(batch, 6, generator=g).abs() * 64,
        }
    return x, context, added


def _call(unet, x, t, context, added):
    # the arguments of limner's guidance (`limner.diffusion.guidance`), and so of a
    # DeepCache full step: a compiled UNet called otherwise would be traced again
    return unet(
        x,
        t,
        encoder_hidden_states=context,
        timestep_cond=None,
        added_cond_kwargs=added,
        return_dict=False,
    )[0]


@pytest.mark.parametrize("branch", [0, 1])
def test_cached_call_on_unchanged_input_equals_full_unet(unets, branch):
    for name, unet in unets.items():
        x, context, added = _inputs(unet)
        t = torch.tensor(400)
        with torch.no_grad():
            reference = _call(unet, x, t, context, added)
            cached = DeepCacheUNet(unet, DeepCacheOptions(interval=2, branch=branch))
            first = _call(cached, x, t, context, added)
            second = _call(cached, x, t, context, added)  # the shallow branch only
        assert cached.full_calls == 1, name
        torch.testing.assert_close(first, reference, rtol=0, atol=0, msg=name)
        torch.testing.assert_close(second, reference, rtol=1e-5, atol=1e-5, msg=name)


def test_cached_call_reuses_deep_features(unets):
    """On a new input the cached call differs from the full UNet (it did not recompute
    the deep part) but stays close to it at a nearby timestep."""
    unet = unets["sd1"]
    x, context, added = _inputs(unet)
    with torch.no_grad():
        cached = DeepCacheUNet(unet, DeepCacheOptions(interval=2))
        _call(cached, x, torch.tensor(400), context, added)
        x2 = x + 0.05 * torch.randn_like(x)
        approx = _call(cached, x2, torch.tensor(380), context, added)
        exact = _call(unet, x2, torch.tensor(380), context, added)
    assert not torch.equal(approx, exact)
    relative = (approx - exact).norm() / exact.norm()
    assert relative < 0.5


@pytest.mark.parametrize("interval", [1, 2, 3])
def test_full_calls_follow_the_interval(unets, interval):
    unet = unets["test-sd1"]
    x, context, added = _inputs(unet)
    cached = DeepCacheUNet(unet, DeepCacheOptions(interval=interval))
    calls = 7
    with torch.no_grad():
        outputs = [
            _call(cached, x, torch.tensor(500 - 10 * i), context, added) for i in range(calls)
        ]
        if interval == 1:
            plain = [
                _call(unet, x, torch.tensor(500 - 10 * i), context, added) for i in range(calls)
            ]
            for a, b in zip(outputs, plain, strict=True):
                torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert cached.full_calls == math.ceil(calls / interval)


def test_unet_untouched_after_deepcache(unets):
    # Weights and outputs unchanged; the capture's hooks are installed once per UNet
    # (never removed: see `limner.runtime.deepcache.install_capture`), not once per generation.
    unet = unets["sd1"]
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    x, context, added = _inputs(unet)
    with torch.no_grad():
        plain = _call(unet, x, torch.tensor(300), context, added)
        hooks = []
        for _ in range(2):
            cached = DeepCacheUNet(unet, DeepCacheOptions(interval=2))
            for i in range(3):
                _call(cached, x, torch.tensor(300 + i), context, added)
            hooks.append(sum(len(m._forward_pre_hooks) for m in unet.modules()))
        again = _call(unet, x, torch.tensor(300), context, added)
    assert hooks[0] == hooks[1] == len(unet.up_blocks[-1].resnets)
    torch.testing.assert_close(again, plain, rtol=0, atol=0)
    for key, value in unet.state_dict().items():
        assert torch.equal(value, before[key])


def test_branch_deeper_than_first_block_is_refused(unets):
    unet = unets["test-sd1"]  # layers_per_block 2
    with pytest.raises(InvalidRequestError, match="branch"):
        DeepCacheUNet(unet, DeepCacheOptions(branch=3))
    with pytest.raises(InvalidRequestError, match="interval"):
        DeepCacheOptions(interval=0)


def test_generate_with_deepcache(tiny_sd1):
    request = api.GenerationRequest(prompt="a red apple", model=tiny_sd1, steps=6, seed=5)
    seen: list[int] = []
    model = api.load(tiny_sd1, runtime=RuntimeOptions.reference())
    handle = model.unet.register_forward_pre_hook(lambda m, a: seen.append(1))
    try:
        plain = api.generate(request, runtime=RuntimeOptions.reference())[0]
        full_calls = len(seen)
        fast = api.generate(
            request,
            runtime=RuntimeOptions(
                precision="fp32", channels_last=False, deepcache=DeepCacheOptions(interval=2)
            ),
        )[0]
    finally:
        handle.remove()
    assert full_calls == 6
    assert len(seen) - full_calls == 3  # every other step runs the whole UNet
    a = np.asarray(plain.image).astype(np.float32)
    b = np.asarray(fast.image).astype(np.float32)
    assert not np.array_equal(a, b)
    assert np.abs(a - b).mean() < 0.25 * a.std()


def _steps(unet, x, context, added, calls=4):
    return [_call(unet, x, torch.tensor(500 - 10 * i), context, added) for i in range(calls)]


def test_compiled_unet_keeps_the_capture_installed_before_it():
    # limner's `compile_unet` installs the capture, then compiles: dynamo traces the hooks
    # into the graph (as a write to an attribute), so the full steps run compiled and the
    # shallow ones reuse their features. (backend "eager": dynamo's tracing without
    # inductor, which is where hooks are kept or skipped.)
    from limner.runtime.deepcache import install_capture

    torch._dynamo.reset()
    unet = build_tiny_components(ArchInfo("sd1"), seed=2)["unet"]
    x, context, added = _inputs(unet)
    with torch.no_grad():
        eager = _steps(DeepCacheUNet(unet, DeepCacheOptions(interval=2)), x, context, added)
        install_capture(unet)
        compiled = torch.compile(unet, backend="eager", dynamic=False)
        # and traced once: what the hooks keep between calls is not guarded on (a
        # recompile of SD 1.5 takes minutes, and its frozen graph holds the weights again)
        with torch._dynamo.config.patch(error_on_recompile=True):
            _call(compiled, x, torch.tensor(999), context, added)  # a generation without it
            cached = DeepCacheUNet(compiled, DeepCacheOptions(interval=2))
            steps = _steps(cached, x, context, added)
            _call(compiled, x, torch.tensor(999), context, added)
    assert cached._full_unet is compiled and cached.full_calls == 2
    for a, b in zip(steps, eager, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


class _GraphTracedWithoutHooks(torch.nn.Module):
    """Stands for a compiled UNet whose graph was traced before the capture's hooks were
    installed (dynamo keeps a module's hooks only if they are there when it traces)."""

    def __init__(self, unet):
        super().__init__()
        self._orig_mod = unet

    def __getattr__(self, name):  # like torch.compile's module: the UNet's attributes
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._orig_mod, name)

    def forward(self, *args, **kwargs):
        resnets = self._orig_mod.up_blocks[-1].resnets
        hooks = [dict(r._forward_pre_hooks) for r in resnets]
        for r in resnets:
            r._forward_pre_hooks.clear()
        try:
            return self._orig_mod(*args, **kwargs)
        finally:
            for r, kept in zip(resnets, hooks, strict=True):
                r._forward_pre_hooks.update(kept)


def test_unet_compiled_without_the_capture_runs_full_steps_eagerly():
    # A full step that kept nothing is run again eagerly, and so are the later ones: the
    # same outputs as without compiling.
    unet = build_tiny_components(ArchInfo("sd1"), seed=3)["unet"]
    x, context, added = _inputs(unet)
    with torch.no_grad():
        cached = DeepCacheUNet(_GraphTracedWithoutHooks(unet), DeepCacheOptions(interval=2))
        steps = _steps(cached, x, context, added)
        eager = _steps(DeepCacheUNet(unet, DeepCacheOptions(interval=2)), x, context, added)
    assert cached._full_unet is unet
    for a, b in zip(steps, eager, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
