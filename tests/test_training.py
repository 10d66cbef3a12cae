"""The trainers of the built-in model (`limner train vae|unet`): tiny architectures on a
tiny dataset, a few steps each. Loss goes down, a resumed run continues exactly as an
uninterrupted one, and exported weights load through the engine as the built-in model."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import UNet2DConditionModel

from limner.data.emoji import build_emoji_dataset
from limner.errors import InputFileError, InvalidRequestError
from limner.models.latent_rgb import load_latent_rgb
from limner.training import trainers
from limner.training.common import EMA, learning_rate, load_checkpoint, read_log
from limner.training.unet import UnetTrainConfig
from limner.training.vae import VaeTrainConfig

TINY_VAE = {
    "_class_name": "AutoencoderKL",
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [8, 8, 8, 8],
    "layers_per_block": 1,
    "latent_channels": 4,
    "norm_num_groups": 4,
    "sample_size": 128,
    "scaling_factor": 1.0,
}

TINY_UNET = {
    "_class_name": "UNet2DConditionModel",
    "sample_size": 16,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
    "block_out_channels": [16, 32],
    "layers_per_block": 1,
    "cross_attention_dim": 384,
    "attention_head_dim": 2,
    "norm_num_groups": 8,
    "use_linear_projection": True,
}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("emoji") / "ds"
    return str(build_emoji_dataset(out, train_size=16, heldout_size=4, seed=3))


@pytest.fixture(scope="module")
def arch_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("arch")
    (root / "vae.json").write_text(json.dumps(TINY_VAE))
    (root / "unet.json").write_text(json.dumps(TINY_UNET))
    return {"vae": str(root / "vae.json"), "unet": str(root / "unet.json")}


def _vae_config(dataset, arch_files, run_dir: Path, steps: int) -> VaeTrainConfig:
    return VaeTrainConfig(
        data=dataset,
        run_dir=str(run_dir),
        steps=steps,
        batch_size=2,
        crop=32,
        lr=3e-3,
        warmup=1,
        limit=2,
        checkpoint_every=3,
        sample_every=0,
        log_every=1,
        arch=arch_files["vae"],
        quiet=True,
    )


@pytest.fixture(scope="module")
def trained_vae(dataset, arch_files, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run folder of a tiny VAE trained 12 steps."""
    from limner.training import vae_loop

    run_dir = tmp_path_factory.mktemp("vae-run")
    vae_loop.train(_vae_config(dataset, arch_files, run_dir, steps=12))
    return run_dir


def test_train_command_has_one_entry_per_trainer():
    from limner.cli import build_parser

    names = set(trainers())
    assert {"vae", "unet"} <= names
    args = build_parser().parse_args(
        ["train", "unet", "--data", "d", "--run-dir", "r", "--steps", "7"]
    )
    assert args.handler is trainers()["unet"].run
    assert args.steps == 7 and args.caption_dropout == pytest.approx(0.1)


def test_trainers_compute_in_bf16_only_where_asked_or_faster(monkeypatch):
    from limner.training import common

    assert common.uses_bf16("bf16") and not common.uses_bf16("fp32")
    with pytest.raises(InvalidRequestError, match="precision"):
        common.uses_bf16("fp16")
    # "auto" follows the runtime's measured choice for this CPU and thread count
    for faster in (True, False):
        common._auto_bf16.cache_clear()
        monkeypatch.setattr(common, "bf16_is_faster", lambda cpu, threads, f=faster: (f, ""))
        assert common.uses_bf16("auto") is faster
        with common.autocast("auto"):
            product = torch.ones(2, 2) @ torch.ones(2, 2)
        assert product.dtype == (torch.bfloat16 if faster else torch.float32)
    common._auto_bf16.cache_clear()


def test_ema_warms_up_and_averages():
    model = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.constant_(model.weight, 0.0)
    ema = EMA(model, max_decay=0.5)
    assert ema.decay() == pytest.approx(0.1)  # (1 + 0) / (10 + 0)
    torch.nn.init.constant_(model.weight, 1.0)
    ema.update(model)  # 0 * 0.1 + 1 * 0.9
    assert float(ema.shadow["weight"]) == pytest.approx(0.9)
    ema.update(model)  # decay now min(0.5, 2/11)
    assert float(ema.shadow["weight"]) == pytest.approx(0.9 * 2 / 11 + 9 / 11)


def test_learning_rate_warms_up_then_holds_or_anneals():
    assert learning_rate(5, 1e-3, warmup=10, total=100) == pytest.approx(5e-4)
    assert learning_rate(90, 1e-3, warmup=10, total=100) == pytest.approx(1e-3)
    cosine = [learning_rate(s, 1e-3, 10, 100, "cosine", floor=0.1) for s in range(1, 121)]
    assert cosine[9] == pytest.approx(1e-3)  # step 10: warm-up done, the cosine starts
    assert cosine[54] == pytest.approx(0.55e-3)  # step 55: half way, (1 + floor) / 2
    assert cosine[99] == pytest.approx(1e-4) and cosine[-1] == pytest.approx(1e-4)
    after = cosine[9:100]
    assert all(a > b for a, b in zip(after, after[1:], strict=False))
    with pytest.raises(InvalidRequestError, match="floor"):
        learning_rate(1, 1e-3, 10, 100, "cosine", floor=1.5)
    with pytest.raises(InvalidRequestError, match="schedule"):
        learning_rate(1, 1e-3, 10, 100, "step")


def test_cosine_schedule_reaches_the_optimizer(dataset, arch_files, tmp_path):
    from limner.cli import build_parser
    from limner.training import vae_loop

    args = build_parser().parse_args(
        [
            "train",
            "vae",
            "--data",
            "d",
            "--run-dir",
            "r",
            "--lr-schedule",
            "cosine",
            "--lr-floor",
            "0.25",
        ]
    )
    assert (args.lr_schedule, args.lr_floor) == ("cosine", 0.25)
    config = _vae_config(dataset, arch_files, tmp_path, steps=3)
    config.lr_schedule, config.lr_floor = "cosine", 0.25
    vae_loop.train(config)
    (group,) = load_checkpoint(tmp_path)["optimizer"]["param_groups"]
    assert group["lr"] == pytest.approx(0.25 * config.lr)  # the last step ran at the floor
    config.lr_floor = -1.0
    with pytest.raises(InvalidRequestError, match="floor"):
        vae_loop.train(config, resume=True)


def test_vae_loss_decreases(trained_vae):
    log = [r["l1"] for r in read_log(trained_vae)]
    assert len(log) == 12
    assert sum(log[-3:]) / 3 < sum(log[:3]) / 3


def test_vae_resume_continues_exactly(dataset, arch_files, trained_vae, tmp_path):
    from limner.training import vae_loop

    vae_loop.train(_vae_config(dataset, arch_files, tmp_path, steps=5))
    vae_loop.train(_vae_config(dataset, arch_files, tmp_path, steps=12), resume=True)
    resumed, straight = load_checkpoint(tmp_path), load_checkpoint(trained_vae)
    assert resumed["state"].step == straight["state"].step == 12
    for key, value in straight["model"].items():
        assert torch.equal(resumed["model"][key], value), key
    assert [r["loss"] for r in read_log(tmp_path)] == [r["loss"] for r in read_log(trained_vae)]


def test_resume_refuses_changed_options_and_fresh_run_refuses_old_dir(
    dataset, arch_files, trained_vae
):
    from limner.training import vae_loop

    changed = _vae_config(dataset, arch_files, trained_vae, steps=20)
    changed.lr = 1e-4
    with pytest.raises(InvalidRequestError, match="lr"):
        vae_loop.train(changed, resume=True)
    with pytest.raises(InvalidRequestError, match="--resume"):
        vae_loop.train(_vae_config(dataset, arch_files, trained_vae, steps=20))


def test_resume_without_checkpoint_is_a_clear_error(dataset, arch_files, tmp_path):
    from limner.training import vae_loop

    with pytest.raises(InputFileError, match="no checkpoint"):
        vae_loop.train(_vae_config(dataset, arch_files, tmp_path, steps=2), resume=True)


@pytest.fixture(scope="module")
def exported(dataset, trained_vae, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from limner.training import vae_loop

    root = tmp_path_factory.mktemp("exported")
    vae_loop.export(trained_vae, root, data=dataset)
    return root


def test_vae_export_is_fp16_safetensors_with_measured_latent_scale(exported):
    from diffusers import AutoencoderKL
    from safetensors.torch import load_file

    tensors = load_file(exported / "vae" / "diffusion_pytorch_model.safetensors")
    assert {t.dtype for t in tensors.values()} == {torch.float16}
    config = json.loads((exported / "vae" / "config.json").read_text())
    assert config["scaling_factor"] != 1.0 and "shift_factor" in config
    AutoencoderKL.from_pretrained(exported / "vae", local_files_only=True)
    rgb = load_latent_rgb(exported / "vae")  # the live-preview map of its latent space
    assert rgb is not None and rgb.channels == config["latent_channels"]


def test_decoder_only_keeps_the_encoder_and_latent_scale(dataset, arch_files, exported, tmp_path):
    from dataclasses import replace

    from diffusers import AutoencoderKL
    from safetensors.torch import load_file

    from limner.training import vae_loop

    run_dir = tmp_path / "decoder-run"
    config = replace(
        _vae_config(dataset, arch_files, run_dir, steps=4),
        init=str(exported / "vae"),
        decoder_only=True,
        arch="",
    )
    vae_loop.train(config)
    out = vae_loop.export(run_dir, tmp_path / "out", data=dataset)
    before = load_file(exported / "vae" / "diffusion_pytorch_model.safetensors")
    after = load_file(out / "diffusion_pytorch_model.safetensors")
    frozen = [k for k in before if k.startswith(("encoder.", "quant_conv."))]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("decoder."))
    for key in ("scaling_factor", "shift_factor"):
        assert (
            AutoencoderKL.load_config(out)[key] == AutoencoderKL.load_config(exported / "vae")[key]
        )
    with pytest.raises(InvalidRequestError, match="--decoder-only needs --init"):
        vae_loop.train(replace(config, init="", run_dir=str(tmp_path / "other")))


def _unet_config(dataset, arch_files, vae: Path, run_dir: Path, steps: int) -> UnetTrainConfig:
    return UnetTrainConfig(
        data=dataset,
        run_dir=str(run_dir),
        vae=str(vae),
        steps=steps,
        batch_size=2,
        lr=2e-3,
        warmup=1,
        caption_dropout=0.5,
        limit=2,
        checkpoint_every=4,
        sample_every=0,
        log_every=1,
        arch=arch_files["unet"],
        quiet=True,
    )


def test_unet_trains_resumes_exactly_and_exports(dataset, arch_files, exported, tmp_path):
    from limner.training import unet_loop

    vae = exported / "vae"
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    with_samples = _unet_config(dataset, arch_files, vae, straight, steps=6)
    with_samples.sample_every = 6  # sample grids go through the engine, as users sample
    unet_loop.train(with_samples)
    assert (straight / "samples" / "step-000006.png").is_file()
    unet_loop.train(_unet_config(dataset, arch_files, vae, resumed, steps=4))
    unet_loop.train(_unet_config(dataset, arch_files, vae, resumed, steps=6), resume=True)
    a, b = load_checkpoint(straight), load_checkpoint(resumed)
    for key, value in a["model"].items():
        assert torch.equal(b["model"][key], value), key
    for key, value in a["ema"]["shadow"].items():
        assert torch.equal(b["ema"]["shadow"][key], value), key
    assert len(read_log(straight)) == 6
    target = unet_loop.export(straight, exported)
    assert (target / "diffusion_pytorch_model.safetensors").is_file()


def test_a_trained_unet_grows_a_pooled_text_embedding_that_starts_at_zero(
    dataset, arch_files, exported, tmp_path
):
    """`--init DIR --arch A` where A adds diffusers' pooled-text embedding
    (addition_embed_type "text"): the grown UNet computes exactly what the trained one
    did, the new part learns, and the export runs through the engine. An architecture
    that would drop or reshape trained weights is refused."""
    from dataclasses import replace

    from limner import api
    from limner.training import unet_loop

    first = tmp_path / "first"
    unet_loop.train(_unet_config(dataset, arch_files, exported / "vae", first, steps=2))
    trained = unet_loop.export(first, tmp_path / "trained")
    pooled = tmp_path / "pooled.json"
    pooled.write_text(
        json.dumps({**TINY_UNET, "addition_embed_type": "text", "addition_embed_type_num_heads": 6})
    )

    before = UNet2DConditionModel.from_pretrained(trained, torch_dtype=torch.float32)
    grown, grown_names = unet_loop.build_unet(str(trained), 0, str(pooled))
    x, t, context = torch.randn(3, 4, 16, 16), torch.tensor([5, 300, 900]), torch.randn(3, 77, 384)
    with torch.no_grad():
        torch.testing.assert_close(grown(x, t, context).sample, before(x, t, context).sample)
    added = {k for k in grown.state_dict() if k not in before.state_dict()}
    assert added and all(k.startswith("add_embedding.") for k in added)
    assert set(grown_names) == added

    run = tmp_path / "grown"
    config = replace(
        _unet_config(dataset, arch_files, exported / "vae", run, steps=3),
        init=str(trained),
        arch=str(pooled),
        grown_lr_scale=10.0,
    )
    unet_loop.train(config)
    checkpoint = load_checkpoint(run)
    assert checkpoint["model"]["add_embedding.norm2.weight"].abs().sum() > 0  # it learnt
    trained_group, grown_group = checkpoint["optimizer"]["param_groups"]
    assert len(grown_group["params"]) == len(added)
    assert grown_group["lr"] == pytest.approx(10 * trained_group["lr"])
    export = unet_loop.export(run, tmp_path / "export")
    model = api.load(str(export.parent))
    assert model.unet.config.addition_embed_type == "text"
    request = api.GenerationRequest(prompt="a red apple", seed=1, steps=2, guidance_scale=3.0)
    assert api.generate(request, model=model)[0].image.size == (128, 128)

    for bad, message in [
        (replace(config, grown_lr_scale=0.0), "must be > 0"),
        (replace(config, arch=""), "needs --init and an --arch"),
        (replace(config, arch=arch_files["unet"]), "adds nothing"),
    ]:
        with pytest.raises(InvalidRequestError, match=message):
            unet_loop.train(replace(bad, run_dir=str(tmp_path / "refused")))

    other_text = tmp_path / "other-text.json"
    other_text.write_text(json.dumps({**TINY_UNET, "cross_attention_dim": 256}))
    with pytest.raises(InvalidRequestError, match="other shapes"):
        unet_loop.build_unet(str(trained), 0, str(other_text))
    narrower = tmp_path / "narrower.json"
    narrower.write_text(json.dumps({**TINY_UNET, "block_out_channels": [16, 16]}))
    with pytest.raises(InvalidRequestError, match="not the trained .* times one whole number"):
        unet_loop.build_unet(str(trained), 0, str(narrower))
    with pytest.raises(InvalidRequestError, match="does not grow into this architecture"):
        unet_loop.build_unet(str(export), 0, arch_files["unet"])


@pytest.mark.parametrize("factor", [2, 3])
def test_a_trained_unet_widens_computing_the_same_and_its_copies_part(tmp_path, factor):
    """`--init DIR --arch A` where A is the trained architecture with every block `factor`
    times wider (Net2Net): the widened UNet gives the trained one's output at every
    timestep, and one step of training makes the copies of a channel differ (the random
    split of their weights breaks the symmetry that would keep them copies)."""
    from limner.training import unet_loop

    torch.manual_seed(0)
    trained = UNet2DConditionModel.from_config(TINY_UNET)
    with torch.no_grad():  # a trained network's norms are not the identity
        for name, p in trained.named_parameters():
            if "norm" in name:
                p.add_(0.3 * torch.randn_like(p))
    trained.save_pretrained(tmp_path / "trained")
    wide = tmp_path / "wide.json"
    wide.write_text(json.dumps({**TINY_UNET, "block_out_channels": [16 * factor, 32 * factor]}))

    widened, grown_names = unet_loop.build_unet(str(tmp_path / "trained"), 5, str(wide))
    assert grown_names == []
    assert widened.conv_in.weight.shape[0] == 16 * factor
    x, context = torch.randn(3, 4, 16, 16), torch.randn(3, 77, 384)
    t = torch.tensor([1, 400, 999])
    with torch.no_grad():
        expected = trained(x, t, context).sample
        torch.testing.assert_close(widened(x, t, context).sample, expected, atol=1e-4, rtol=1e-4)

    # Output channel c becomes c*factor..: equal biases (the weights are split on the inputs).
    copies = widened.down_blocks[0].resnets[0].conv1.bias
    assert torch.equal(copies[0], copies[1])
    optimizer = torch.optim.SGD(widened.parameters(), lr=0.1)
    widened(x, t, context).sample.square().mean().backward()
    optimizer.step()
    assert not torch.allclose(copies[0], copies[1])


def test_widening_refuses_what_is_not_a_whole_widening(tmp_path):
    from limner.training import unet_loop

    UNet2DConditionModel.from_config(TINY_UNET).save_pretrained(tmp_path / "trained")
    for change, message in [
        ({"block_out_channels": [32, 48]}, "not the trained .* times one whole number"),
        ({"block_out_channels": [32, 64], "layers_per_block": 2}, "also changes layers_per_block"),
        ({"block_out_channels": [32, 64], "freq_shift": 1}, "also changes freq_shift"),
    ]:
        arch = tmp_path / "arch.json"
        arch.write_text(json.dumps({**TINY_UNET, **change}))
        with pytest.raises(InvalidRequestError, match=message):
            unet_loop.build_unet(str(tmp_path / "trained"), 0, str(arch))


def test_single_fraction_draws_that_share_of_single_emoji_scenes(dataset):
    import numpy as np

    from limner.training.data import SceneBatches, _draw

    uniform = SceneBatches(dataset, "train")
    kinds = [uniform.dataset.record(i)["kind"] for i in range(uniform.size)]
    assert "single" in kinds and len(set(kinds)) > 1  # the tiny dataset has both
    for fraction in (0.0, 0.8, 1.0):
        batches = SceneBatches(dataset, "train", single_fraction=fraction)
        idx = batches.indices(np.random.default_rng(0), 4000)
        assert idx.min() >= 0 and idx.max() < batches.size
        share = np.mean([kinds[i] == "single" for i in idx])
        expected = kinds.count("single") / len(kinds) if fraction == 0 else fraction
        assert abs(share - expected) < 0.03, (fraction, share)
        # the same (seed, step) draws the same batch, so a resumed run sees the same data
        again = batches.indices(np.random.default_rng(0), 4000)
        assert np.array_equal(idx, again)
    with pytest.raises(InvalidRequestError, match="single-fraction"):
        SceneBatches(dataset, "train", single_fraction=1.5)
    # the first scene alone is a split of pairs only: a share of single scenes is refused
    assert kinds[0] == "pair"
    with pytest.raises(InvalidRequestError, match="no single-emoji scenes"):
        SceneBatches(dataset, "train", limit=1, single_fraction=0.5)
    # a pool of one kind that is never picked (fraction 1 with no pairs) draws nothing
    assert _draw(np.random.default_rng(0), np.array([], dtype=np.int64), 3).tolist() == [0, 0, 0]
    assert set(_draw(np.random.default_rng(0), np.array([5, 7]), 64).tolist()) == {5, 7}


def test_foreground_weights_mark_the_cells_under_each_emoji_box(dataset):
    from limner.training.data import SceneBatches
    from limner.training.unet_loop import foreground_weights

    # a 20-px emoji at (0, 0) touches cells 0..2 (8-px cells); an 8-px one
    # at (60, 96) touches cells x 7..8, y 12
    w = foreground_weights([[(0, 0, 20), (60, 96, 8)], []], side=16, cell=8, weight=4.0)
    assert w.shape == (2, 1, 16, 16)
    marked = torch.zeros(16, 16, dtype=torch.bool)
    marked[0:3, 0:3] = True
    marked[12, 7:9] = True
    fg, bg = w[0, 0][marked], w[0, 0][~marked]
    assert torch.allclose(fg, fg[0]) and torch.allclose(bg, bg[0])
    assert fg[0] / bg[0] == pytest.approx(4.0)
    assert w.mean(dim=(1, 2, 3)).tolist() == pytest.approx([1.0, 1.0])
    assert torch.equal(w[1], torch.ones(1, 16, 16))  # no emoji: uniform
    # a box running off the canvas is clipped, not an error
    edge = foreground_weights([[(120, 120, 40)]], side=16, cell=8, weight=2.0)
    assert (edge[0, 0, 15, 15] > edge[0, 0, 0, 0]).item()
    with pytest.raises(InvalidRequestError, match="foreground-weight"):
        foreground_weights([[]], side=16, cell=8, weight=0.0)
    # the boxes come from the scenes the batch renders
    batches = SceneBatches(dataset, "train")
    boxes = batches.boxes([0])
    assert boxes[0] == [(p.x, p.y, p.size) for p in batches.dataset.scene(0).items]


def test_foreground_weighted_training_runs_and_weights_only_when_asked(
    dataset, arch_files, exported, tmp_path
):
    from limner.training import unet_loop

    vae = exported / "vae"
    plain = _unet_config(dataset, arch_files, vae, tmp_path / "plain", steps=2)
    weighted = _unet_config(dataset, arch_files, vae, tmp_path / "weighted", steps=2)
    weighted.foreground_weight = 6.0
    unet_loop.train(plain)
    unet_loop.train(weighted)
    a, b = read_log(tmp_path / "plain"), read_log(tmp_path / "weighted")
    assert len(a) == len(b) == 2
    # same seed, same batches, same noise: only the weighting differs
    assert a[0]["loss"] != pytest.approx(b[0]["loss"], rel=1e-6)
    bad = _unet_config(dataset, arch_files, vae, tmp_path / "bad", steps=1)
    bad.foreground_weight = -1.0
    with pytest.raises(InvalidRequestError, match="foreground-weight"):
        unet_loop.train(bad)


def test_context_noise_spares_the_dropped_captions_and_is_seeded():
    from limner.training.unet_loop import noisy_context

    context = torch.randn(4, 77, 384)
    captioned = torch.tensor([True, False, True, False])
    noised = noisy_context(context, 0.2, captioned, torch.Generator().manual_seed(3))
    again = noisy_context(context, 0.2, captioned, torch.Generator().manual_seed(3))
    torch.testing.assert_close(noised, again)
    torch.testing.assert_close(noised[~captioned], context[~captioned])  # exact empty prompt
    added = noised[captioned] - context[captioned]
    assert added.std().item() == pytest.approx(0.2, rel=0.05)
    assert noisy_context(context, 0.0, captioned, torch.Generator()) is context


def test_context_noise_changes_training_only_when_asked(
    dataset, arch_files, exported, tmp_path, monkeypatch
):
    from dataclasses import replace

    from limner.training import unet_loop

    added: list[float] = []  # RMS of what each step added to the clean text embeddings
    original = unet_loop.noisy_context

    def recording(context, std, captioned, generator):
        noised = original(context, std, captioned, generator)
        added.append((noised - context).pow(2).mean().sqrt().item())
        return noised

    monkeypatch.setattr(unet_loop, "noisy_context", recording)
    vae = exported / "vae"
    plain = replace(
        _unet_config(dataset, arch_files, vae, tmp_path / "plain", steps=1), caption_dropout=0.0
    )
    noised = replace(plain, run_dir=str(tmp_path / "noised"), context_noise=0.3)
    unet_loop.train(plain)
    unet_loop.train(noised)
    assert added[0] == 0.0 and added[1] == pytest.approx(0.3, rel=0.1)
    a, b = read_log(tmp_path / "plain"), read_log(tmp_path / "noised")
    assert a[0]["loss"] != pytest.approx(b[0]["loss"], rel=1e-6)
    with pytest.raises(InvalidRequestError, match="context-noise"):
        unet_loop.train(replace(plain, run_dir=str(tmp_path / "bad"), context_noise=-0.1))
    with pytest.raises(InvalidRequestError, match="context_noise"):  # a resume key
        unet_loop.train(replace(noised, context_noise=0.1), resume=True)


def test_text_conditioning_matches_the_engine():
    """The trainer encodes captions as the engine encodes a prompt at sampling time."""
    from limner.models.latent import Family
    from limner.models.loading import prompt_encoder_for
    from limner.training.unet_loop import TextConditioner

    text = TextConditioner()
    engine = prompt_encoder_for(
        Family.BUILTIN, {"tokenizer": text.tokenizer, "text_encoder": text.encoder}
    )
    captions = ["a red apple to the left of a dog on a blue background", ""]
    batch = text(captions)
    for k, caption in enumerate(captions):
        expected = engine.encode(caption).embeds[0]
        torch.testing.assert_close(batch[k], expected, atol=1e-5, rtol=1e-5)


def test_builtin_loads_exported_weights_without_placeholder_warning(
    dataset, arch_files, exported, tmp_path, monkeypatch
):
    """Weights in the package's builtin folder replace the placeholder, engine path."""
    import shutil

    from limner import api
    from limner.models import builtin
    from limner.training import unet_loop

    unet_run = tmp_path / "unet-run"
    unet_loop.train(_unet_config(dataset, arch_files, exported / "vae", unet_run, steps=2))
    folder = tmp_path / "builtin"
    shutil.copytree(builtin.builtin_dir(), folder, ignore=shutil.ignore_patterns("unet", "vae"))
    shutil.copytree(exported / "vae", folder / "vae")
    unet_loop.export(unet_run, folder)
    monkeypatch.setattr(builtin, "builtin_dir", lambda: folder)
    assert builtin.has_trained_weights()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = builtin.load_builtin()
    assert model.unet.config.block_out_channels == TINY_UNET["block_out_channels"]
    request = api.GenerationRequest(prompt="a red apple", seed=1, steps=2, guidance_scale=3.0)
    image = api.generate(request, model=model)[0].image
    assert image.size == (128, 128)


def test_an_export_folder_is_a_model_the_builtin_completes(dataset, arch_files, exported, tmp_path):
    """`--model DIR` on a trainer's export (DIR/unet only here): the built-in model with
    that UNet, the shipped VAE; provenance names the folder and hashes the parts used."""
    import json

    from limner import api
    from limner.errors import ModelLoadError
    from limner.models.loading import resolve_model
    from limner.training import unet_loop

    unet_run = tmp_path / "unet-run"
    config = _unet_config(dataset, arch_files, exported / "vae", unet_run, steps=2)
    unet_loop.train(config)
    export = tmp_path / "export"
    unet_loop.export(unet_run, export)
    assert resolve_model(str(export)).kind == "builtin_parts"
    request = api.GenerationRequest(
        prompt="a red apple", model=str(export), seed=1, steps=2, guidance_scale=3.0
    )
    result = api.generate(request)[0]
    model = api.load(str(export))
    assert model.unet.config.block_out_channels == TINY_UNET["block_out_channels"]
    assert model.vae.config.block_out_channels == [16, 32, 64, 64]  # the shipped VAE
    assert result.image.size == (128, 128)
    shipped = api.load(None)
    assert model.sha256 and model.sha256 != shipped.sha256
    assert result.model_sha256 == model.sha256

    wide = tmp_path / "wide" / "unet"  # a UNet the built-in text encoder cannot drive
    wide.mkdir(parents=True)
    (wide / "config.json").write_text(json.dumps({**TINY_UNET, "cross_attention_dim": 768}))
    unet = UNet2DConditionModel.from_config({**TINY_UNET, "cross_attention_dim": 768})
    unet.save_pretrained(wide, safe_serialization=True)
    with pytest.raises(ModelLoadError, match="cross-attention width 768"):
        api.load(str(wide.parent))
    eight = tmp_path / "eight" / "unet"  # latents the shipped VAE does not make
    UNet2DConditionModel.from_config({**TINY_UNET, "in_channels": 8}).save_pretrained(
        eight, safe_serialization=True
    )
    with pytest.raises(ModelLoadError, match="takes 8 latent channels, the VAE makes 4"):
        api.load(str(eight.parent))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="not a diffusers model"):
        resolve_model(str(tmp_path / "empty"))


def test_showcase_grid_has_one_cell_per_prompt(tiny_sd1, tmp_path):
    from PIL import Image

    from limner.training.showcase import showcase

    out = showcase(tmp_path / "grid.png", ["a red apple", "a dog"], model=tiny_sd1, steps=2)
    grid = Image.open(out)
    assert grid.width > 2 * 64 and grid.height > 64  # two cells side by side, captions below


def test_a_recorded_run_rerun_from_scratch_reaches_its_losses(tmp_path):
    """The rerun criterion of the model card in small: the recorded stage-1 VAE command,
    on the default dataset, from scratch, logs its first recorded loss within 10% (the
    same digits on a CPU with bf16; fp32 elsewhere)."""
    from importlib import resources

    from limner.cli import main

    record = json.loads(
        (resources.files("limner") / "builtin" / "training_record.json").read_text("utf-8")
    )
    run = record["runs"][0]
    data = build_emoji_dataset(tmp_path / "emoji", train_size=200_000, heldout_size=0, seed=0)
    steps = 20
    args = ["train", *run["args"], "--data", str(data), "--run-dir", str(tmp_path / "run")]
    assert main([*args, "--steps", str(steps), "--sample-every", "0", "--quiet"]) == 0
    logged = {r["step"]: r["loss"] for r in read_log(tmp_path / "run") if "loss" in r}
    recorded = run["logged_loss"][str(steps)]
    assert abs(logged[steps] - recorded) <= 0.1 * recorded


def test_row_cache_computes_each_row_once_and_keeps_what_it_saved(tmp_path):
    from limner.training.encode_cache import RowCache

    asked: list[list[int]] = []

    def compute(rows):
        asked.append(rows.tolist())
        return torch.tensor(rows, dtype=torch.float32).view(-1, 1, 1).expand(-1, 2, 3) * 1.5

    cache = RowCache(tmp_path, "rows", 10, (2, 3), {"source": "a"})
    got = cache.get([4, 1, 4], compute)
    assert asked == [[1, 4]]  # each missing row once, in order
    assert got.shape == (3, 2, 3) and got[:, 0, 0].tolist() == [6.0, 1.5, 6.0]
    cache.get([1, 7], compute)
    assert asked == [[1, 4], [7]]
    cache.save()
    cache.get([2], compute)  # filled after the last save: not marked on disk
    reopened = RowCache(tmp_path, "rows", 10, (2, 3), {"source": "a"})
    assert reopened.filled.nonzero()[0].tolist() == [1, 4, 7]
    asked.clear()
    assert reopened.get([7, 2], compute)[:, 1, 2].tolist() == [10.5, 3.0]
    assert asked == [[2]]
    with pytest.raises(IndexError):
        reopened.get([10], compute)


def test_row_cache_refuses_a_cache_of_other_inputs_or_a_damaged_file(tmp_path):
    from limner.training.encode_cache import RowCache

    RowCache(tmp_path, "rows", 10, (2, 3), {"source": "a"}).save()
    with pytest.raises(InvalidRequestError, match="another source"):
        RowCache(tmp_path, "rows", 10, (2, 3), {"source": "b"})
    with pytest.raises(InvalidRequestError, match="another row_shape"):
        RowCache(tmp_path, "rows", 10, (3, 2), {"source": "a"})
    with open(tmp_path / "rows.f32", "r+b") as f:
        f.truncate(100)
    with pytest.raises(InvalidRequestError, match="not 240 bytes"):
        RowCache(tmp_path, "rows", 10, (2, 3), {"source": "a"})
    with pytest.raises(InvalidRequestError, match="not a folder"):
        RowCache(tmp_path / "rows.json", "rows", 10, (2, 3), {"source": "a"})


def test_unet_encoder_cache_trains_as_without_and_is_read_again(
    dataset, arch_files, exported, tmp_path, monkeypatch
):
    from dataclasses import replace

    from limner.training import unet_loop

    calls = {"text": 0, "vae": 0}
    encode_captions, vae_encode = unet_loop.encode_captions, unet_loop.AutoencoderKL.encode

    def counting_text(*args, **kwargs):
        calls["text"] += 1
        return encode_captions(*args, **kwargs)

    def counting_vae(self, *args, **kwargs):
        calls["vae"] += 1
        return vae_encode(self, *args, **kwargs)

    monkeypatch.setattr(unet_loop, "encode_captions", counting_text)
    monkeypatch.setattr(unet_loop.AutoencoderKL, "encode", counting_vae)
    plain = replace(_unet_config(dataset, arch_files, exported / "vae", tmp_path / "a", 4), limit=3)
    cache = tmp_path / "cache"
    cached = replace(plain, run_dir=str(tmp_path / "b"), cache=str(cache))
    unet_loop.train(plain)
    unet_loop.train(cached)
    assert calls["text"] > 1 and calls["vae"] >= 1
    a, b = read_log(tmp_path / "a"), read_log(tmp_path / "b")
    assert [r["loss"] for r in b] == pytest.approx([r["loss"] for r in a], rel=2e-3)
    filled = np.load(cache / "text.filled.npy")
    assert filled.shape == (16,) and 1 <= filled.sum() <= 3 and not filled[3:].any()
    assert np.array_equal(np.load(cache / "posterior.filled.npy"), filled)

    calls.update(text=0, vae=0)
    unet_loop.train(replace(cached, run_dir=str(tmp_path / "c")))
    assert calls == {"text": 1, "vae": 0}  # only the empty prompt is encoded again
    c = read_log(tmp_path / "c")
    assert [r["loss"] for r in c] == [r["loss"] for r in b]
    other = replace(cached, run_dir=str(tmp_path / "d"), data=str(tmp_path / "elsewhere"))
    build_emoji_dataset(Path(other.data), train_size=16, heldout_size=4, seed=4)
    with pytest.raises(InvalidRequestError, match="scenes_sha256"):
        unet_loop.train(other)
