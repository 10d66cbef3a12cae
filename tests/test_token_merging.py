"""Token merging (`limner.runtime.token_merging`, ToMe for SD): the merge and unmerge of a
plan, which attentions it reaches, that ratio 0 is the plain UNet bit for bit, and that
generation through the API uses it, records it and reproduces it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from limner import api
from limner.checkpoints.arch import ArchInfo
from limner.checkpoints.tiny import build_tiny_components
from limner.errors import InvalidRequestError
from limner.runtime.device import RuntimeOptions
from limner.runtime.token_merging import (
    MergePlan,
    TokenMergingProcessor,
    set_token_merging,
)


def _plan(x, height, width, ratio, seed=0):
    choice = torch.randint(
        4, (x.shape[0], height // 2, width // 2), generator=torch.Generator().manual_seed(seed)
    )
    return MergePlan.build(x, height, width, ratio, choice)


def test_a_plan_keeps_one_destination_per_cell_and_merges_the_ratio():
    x = torch.randn(3, 8 * 6, 5)
    plan = _plan(x, 8, 6, 0.5)
    assert plan.merged.shape == (3, 24)
    assert plan.merge(x).shape == (3, 24, 5)
    y = plan.unmerge(plan.merge(x))
    assert y.shape == x.shape
    src = plan.src
    for b in range(3):
        cells = {(int(d) // 6 // 2, int(d) % 6 // 2) for d in plan.dst[b]}
        assert len(cells) == 12  # one destination in each 2x2 cell
        kept = src[b, plan.kept[b]]
        torch.testing.assert_close(y[b, kept], x[b, kept], rtol=0, atol=0)
        merged, into = src[b, plan.merged[b]], plan.dst[b, plan.target[b]]
        torch.testing.assert_close(y[b, merged], y[b, into], rtol=0, atol=0)


def test_merging_copies_of_a_token_loses_nothing():
    """Where the four tokens of every 2x2 cell are equal, merging all sources (ratio 0.75)
    averages copies: unmerge(merge(x)) is x."""
    cells = torch.randn(2, 4, 5, 7)  # (B, rows, cols, C)
    x = cells.repeat_interleave(2, dim=1).repeat_interleave(2, dim=2).reshape(2, 80, 7)
    plan = _plan(x, 8, 10, 0.75)
    assert plan.merge(x).shape == (2, 20, 7)
    torch.testing.assert_close(plan.unmerge(plan.merge(x)), x)


@pytest.fixture(scope="module")
def unets():
    return {
        "sd1": build_tiny_components(ArchInfo("sd1"), seed=1)["unet"],
        "sdxl": build_tiny_components(ArchInfo("sdxl"), seed=1)["unet"],
    }


def _inputs(unet, size=8):
    g = torch.Generator().manual_seed(0)
    config = unet.config
    x = torch.randn(2, config.in_channels, size, size, generator=g)
    context = torch.randn(2, 7, config.cross_attention_dim, generator=g)
    added = None
    if config.addition_embed_type == "text_time":
        pooled = config.projection_class_embeddings_input_dim - 6 * config.addition_time_embed_dim
        added = {
            "text_embeds": torch.randn(2, pooled, generator=g),
            "time_ids": torch.randn(2, 6, generator=g).abs() * 64,
        }
    return x, context, added


def _call(unet, inputs):
    x, context, added = inputs
    with torch.no_grad():
        return unet(x, 400, encoder_hidden_states=context, added_cond_kwargs=added).sample


def _restore(unet):
    for module in unet.modules():
        if isinstance(getattr(module, "processor", None), TokenMergingProcessor):
            module.set_processor(module.processor.base)


def test_merging_reaches_only_the_full_resolution_self_attentions(unets):
    unet = unets["sd1"]  # cross-attention blocks at 8x8 and 4x4 latents here
    inputs = _inputs(unet)
    plain = _call(unet, inputs)
    seen: list[tuple[int, bool]] = []
    hooks = [
        module.register_forward_pre_hook(
            lambda m, args, kwargs: seen.append((args[0].shape[1], m.is_cross_attention)),
            with_kwargs=True,
        )
        for module in unet.modules()
        if type(module).__name__ == "Attention"
    ]
    attended: list[int] = []  # tokens each self-attention's own processor was given

    def recording(base):
        def call(attn, hidden_states, *args, **kwargs):
            attended.append(hidden_states.shape[1])
            return base(attn, hidden_states, *args, **kwargs)

        call.base = base
        return call

    try:
        set_token_merging(unet, 0.5, 8, 8, seeds=[1, 2])
        for module in unet.modules():
            if isinstance(getattr(module, "processor", None), TokenMergingProcessor):
                module.processor.base = recording(module.processor.base)
        merged = _call(unet, inputs)
    finally:
        for hook in hooks:
            hook.remove()
        for module in unet.modules():
            processor = getattr(module, "processor", None)
            if isinstance(processor, TokenMergingProcessor) and hasattr(processor.base, "base"):
                processor.base = processor.base.base
        _restore(unet)
    full_res_self = [s for s in seen if s == (64, False)]
    assert full_res_self and attended.count(32) == len(full_res_self)
    assert 64 not in attended  # no full-resolution self-attention saw every token
    assert not torch.equal(merged, plain)
    assert (merged - plain).abs().mean() < 0.5 * plain.std()


def test_ratio_zero_is_the_plain_unet_bit_for_bit(unets):
    for name, unet in unets.items():
        inputs = _inputs(unet)
        plain = _call(unet, inputs)
        try:
            set_token_merging(unet, 0.5, 8, 8, seeds=[1, 2])
            once_merged = _call(unet, inputs)
            set_token_merging(unet, 0.0, 8, 8, seeds=[1, 2])
            off = _call(unet, inputs)
        finally:
            _restore(unet)
        torch.testing.assert_close(off, plain, rtol=0, atol=0, msg=name)
        if name == "sdxl":  # no attention at full resolution: nothing to merge
            torch.testing.assert_close(once_merged, plain, rtol=0, atol=0)


def test_ratio_out_of_range_is_refused():
    for bad in (-0.1, 0.8, 2.0):
        with pytest.raises(InvalidRequestError, match="token merging ratio"):
            RuntimeOptions(token_merging=bad)


def test_generate_with_token_merging_records_and_reproduces_it(tmp_path):
    """The built-in model (cross-attention at its full 16x16 latent resolution)."""
    request = api.GenerationRequest(prompt="a red apple", steps=4, seed=3, guidance_scale=5)
    plain = api.generate(request, runtime=RuntimeOptions.reference())[0]
    runtime = RuntimeOptions(precision="fp32", channels_last=False, token_merging=0.5)
    merged = api.generate(request, runtime=runtime)[0]
    assert "Token merging ratio: 0.5" in merged.infotext
    assert "Token merging" not in plain.infotext
    a = np.asarray(plain.image).astype(np.float32)
    b = np.asarray(merged.image).astype(np.float32)
    assert not np.array_equal(a, b)
    # Loose: at 16x16 latents (256 tokens) merging half of them is a large change, unlike
    # SD's 4096; the UNet-level closeness is checked above.
    assert np.abs(a - b).mean() < 0.6 * a.std()

    path = api.save_images([merged], tmp_path / "merged.png")[0]
    again = api.generate_from(path)
    assert np.array_equal(np.asarray(again.image), np.asarray(merged.image))
    # and the same model object, unmerged again, gives the plain image
    back = api.generate(request, runtime=RuntimeOptions.reference())[0]
    assert np.array_equal(np.asarray(back.image), np.asarray(plain.image))


@pytest.mark.parametrize("freezing", [False, True])
def test_a_compiled_unet_merges_in_one_graph_for_every_seed(unets, freezing):
    """No graph break (fullgraph) and no recompile when the next image's seed changes the
    destinations: the merge has no data-dependent shapes and no Python side effects. With
    inductor's freezing (how limner compiles) a tensor kept on the UNet's modules would be
    a constant guarded by identity: a recompile per seed, or a stale destination."""
    import torch._dynamo
    import torch._inductor.config as inductor_config
    from torch._dynamo.utils import counters

    unet = unets["sd1"]
    inputs = _inputs(unet)
    torch._dynamo.reset()
    counters.clear()
    try:
        with inductor_config.patch(freezing=freezing):
            set_token_merging(unet, 0.5, 8, 8, seeds=[3, 4])
            eager_other = _call(unet, inputs)
            set_token_merging(unet, 0.5, 8, 8, seeds=[1, 2])
            eager = _call(unet, inputs)
            compiled = torch.compile(unet, backend="eager", fullgraph=True, dynamic=False)
            first = _call(compiled, inputs)
            set_token_merging(unet, 0.5, 8, 8, seeds=[3, 4])
            other = _call(compiled, inputs)
            set_token_merging(unet, 0.5, 8, 8, seeds=[1, 2])
            again = _call(compiled, inputs)
    finally:
        _restore(unet)
        torch._dynamo.reset()
    assert not torch.equal(eager_other, eager)
    torch.testing.assert_close(first, eager, rtol=0, atol=0)
    torch.testing.assert_close(other, eager_other, rtol=0, atol=0)
    torch.testing.assert_close(again, eager, rtol=0, atol=0)
    assert counters["stats"]["unique_graphs"] == 1
