"""`limner bench`: the quick mode runs every contender end to end and reports; the FLOP
count of the bound is right for SD 1.5; bad arguments are refused."""

from __future__ import annotations

import json

import pytest

from limner import cli
from limner.bench import BenchConfig, contenders, format_report, matmul_rate, unet_flops_per_step
from limner.errors import InvalidRequestError


def test_quick_bench_reports_every_contender(capsys):
    code = cli.main(
        ["bench", "--quick", "--steps", "2", "--warmup-steps", "0", "--deepcache", "--json"]
        + ["--low-memory", "--tome", "0.5"]
    )
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    modes = {"limner+deepcache", "limner+tome", "limner+deepcache+tome"}
    assert set(report["results"]) == {"diffusers", "limner", *modes}
    for name, result in report["results"].items():
        assert result["step_seconds"] > 0, name
        assert result["image_seconds"] >= result["step_seconds"], name
        assert len(result["image_samples"]) == 1
        assert result["peak_bytes"] is None or result["peak_bytes"] > 10_000_000
    assert report["results"]["diffusers"]["precision"] == "fp32"
    limner = report["results"]["limner"]
    assert limner["precision"] == report["cpu"]["auto_precision"]
    # --low-memory keeps an fp32 run's weights in fp16; bf16 weights are 16-bit already
    assert limner["weights"] == ("fp16" if limner["precision"] == "fp32" else "bf16")
    assert report["results"]["diffusers"]["weights"] == "fp32"
    assert report["unet_flops_per_step"] > 0
    assert report["matmul_flops_per_second"]["bf16"] > 0
    ratios = report["ratios"]
    assert ratios["limner"]["image_speedup_vs_diffusers"] > 0
    for mode in modes:
        assert ratios[mode]["image_speedup_vs_limner"] > 0
    table = format_report(report)
    assert "bound per UNet step" in table and "64x64" in table
    assert "token merging over limner" in table
    rows = [line.split()[0] for line in table.splitlines() if line.strip()]
    assert {"diffusers", "limner", *modes} <= set(rows)


@pytest.mark.parametrize("rounds", [1, 2])
def test_workers_alive_at_once_only_when_rounds_alternate(rounds):
    """One round: each contender's worker is stopped before the next one builds, so
    their memory never adds up (five compiled SD 1.5 workers exceed 24 GB). Several
    rounds: all stay alive, to alternate."""
    import multiprocessing

    from limner.bench import run_bench

    alive_when_ready = []

    def say(message: str) -> None:
        if ": ready in" in message:
            alive_when_ready.append(len(multiprocessing.active_children()))

    cfg = BenchConfig(arch="tiny", steps=1, rounds=rounds, warmup_steps=0)
    report = run_bench(cfg, say=say)
    assert set(report["results"]) == {"diffusers", "limner"}
    assert all(len(r["image_samples"]) == rounds for r in report["results"].values())
    assert alive_when_ready == ([1, 1] if rounds == 1 else [2, 2])


def test_sd15_flops_per_step():
    """SD 1.5 at 512x512: about 0.80 TFLOP per UNet image (convolutions, projections and
    attention), twice that with the guidance batch."""
    guided = unet_flops_per_step(BenchConfig(arch="sd15", width=512, height=512))
    single = unet_flops_per_step(BenchConfig(arch="sd15", guidance_scale=1.0))
    assert guided == pytest.approx(2 * single)
    assert 1.5e12 < guided < 1.7e12
    bigger = unet_flops_per_step(BenchConfig(arch="sd15", width=768, height=768))
    assert bigger > 2.25 * guided  # convolutions scale with the area, attention faster


def test_matmul_rate_grows_its_product_only_up_to_the_cap(monkeypatch):
    """The rate's product grows until it takes long enough, never past max_size: a CPU
    that emulates bf16 must not spend minutes measuring it."""
    import torch

    sizes = []
    real_randn = torch.randn

    def recording_randn(*shape, **kwargs):
        sizes.append(shape[0])
        return real_randn(*shape, **kwargs)

    monkeypatch.setattr(torch, "randn", recording_randn)
    for dtype in ("bf16", "fp32"):
        sizes.clear()
        rate = matmul_rate(dtype, max_size=512, min_seconds=60.0, repeats=1)
        assert 0 < rate < float("inf")
        assert sizes == [256, 256, 512, 512]  # two operands per size, stopped at the cap
    sizes.clear()
    matmul_rate("fp32", max_size=4096, min_seconds=0.0, repeats=1)
    assert sizes == [256, 256]  # already long enough at the first size


def test_contenders_follow_the_options():
    plain = contenders(BenchConfig(arch="tiny"))
    assert [c.name for c in plain] == ["diffusers", "limner"]
    deep = contenders(
        BenchConfig(
            arch="tiny", diffusers=False, runtime={"deepcache": {"interval": 3, "branch": 0}}
        )
    )
    assert [c.name for c in deep] == ["limner", "limner+deepcache"]
    assert deep[0].runtime["deepcache"] is None
    assert deep[1].runtime["deepcache"] == {"interval": 3, "branch": 0}
    both = contenders(
        BenchConfig(
            arch="tiny",
            diffusers=False,
            runtime={"deepcache": {"interval": 2, "branch": 0}, "token_merging": 0.5},
        )
    )
    names = ["limner", "limner+deepcache", "limner+tome", "limner+deepcache+tome"]
    assert [c.name for c in both] == names
    runs = {c.name: (c.runtime["deepcache"], c.runtime["token_merging"]) for c in both}
    assert runs["limner"] == (None, 0.0)
    assert runs["limner+deepcache"] == ({"interval": 2, "branch": 0}, 0.0)
    assert runs["limner+tome"] == (None, 0.5)
    assert runs["limner+deepcache+tome"] == ({"interval": 2, "branch": 0}, 0.5)


def test_bad_configs_are_refused():
    with pytest.raises(InvalidRequestError):
        BenchConfig(arch=None, model=None).check()
    with pytest.raises(InvalidRequestError):
        BenchConfig(arch="sd15", model="x.safetensors").check()
    with pytest.raises(InvalidRequestError):
        BenchConfig(arch="sd3").check()
    with pytest.raises(InvalidRequestError):
        BenchConfig(steps=0).check()
