"""`limner bench`: limner against stock diffusers, on this machine, in one run.

Each contender (stock diffusers, limner, and limner with DeepCache when asked) runs in its
own worker process, so that each one's peak memory is its own and no contender's
allocator state slows another. With several rounds all workers stay alive and the parent
sends "generate" to them in turn - one image each per round, the order alternating
between rounds - so a machine whose load changes during the run slows every contender
alike; the ratios are what to read. With one round the contenders run one after the
other, each worker stopped before the next starts, so their memory never adds up.

Reported per contender: the median time per UNet step (from the per-step callbacks),
time per image (prompt encoding, all steps and the VAE decode), and peak resident memory
during the generation (weights included). The bound is the UNet's floating-point work per
step (counted on the meta device by `torch.utils.flop_counter`, guidance batch included)
divided by the matrix-multiply rate measured on the spot, in bf16 and in fp32.

`--arch sd15|sd21|sdxl` builds the full-size architecture with random weights (speed does
not depend on the weights); `--arch tiny` is a toy SD 1.x model for a quick check;
`--model` benchmarks a real model.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field

from limner.errors import InvalidRequestError
from limner.runtime.cli_options import add_speed_arguments, runtime_from_args

ARCHES = {  # --arch name -> (family, prediction type)
    "sd15": ("sd1", "epsilon"),
    "sd21": ("sd2", "v_prediction"),
    "sdxl": ("sdxl", "epsilon"),
    "tiny": ("sd1", "epsilon"),
}
DEFAULT_PROMPT = "a lighthouse on a cliff at sunset, oil painting"


@dataclass
class BenchConfig:
    arch: str | None = "sd15"
    model: str | None = None
    prompt: str = DEFAULT_PROMPT
    negative_prompt: str = ""
    width: int | None = None
    height: int | None = None
    steps: int = 20
    sampler: str = "DPM++ 2M"
    guidance_scale: float = 7.0
    seed: int = 0
    rounds: int = 1
    warmup_steps: int = 1
    diffusers: bool = True
    runtime: dict = field(default_factory=dict)  # RuntimeOptions.to_dict()

    def check(self) -> None:
        if (self.arch is None) == (self.model is None):
            raise InvalidRequestError("give either --arch or --model")
        if self.arch is not None and self.arch not in ARCHES:
            raise InvalidRequestError(f"unknown --arch {self.arch!r}: one of {', '.join(ARCHES)}")
        if self.steps < 1 or self.rounds < 1 or self.warmup_steps < 0:
            raise InvalidRequestError("steps and rounds must be at least 1, warm-up steps >= 0")


@dataclass
class Contender:
    name: str
    kind: str  # "diffusers" | "limner"
    runtime: dict  # limner's RuntimeOptions.to_dict(); unused for diffusers


@dataclass
class Measurement:
    step_seconds: float  # mean over the timed steps of all rounds (DeepCache alternates)
    image_seconds: float  # median over rounds, per image
    peak_bytes: int | None
    load_seconds: float
    precision: str
    weights: str  # the dtype the weights are kept in (fp16 with --low-memory's fp32 runs)
    step_samples: list[float] = field(default_factory=list)
    image_samples: list[float] = field(default_factory=list)


# -- workers (each in its own process) --------------------------------------------------


def _build_components(cfg: BenchConfig, dtype):
    """Components of the benchmark model in `dtype`: random full-size or tiny weights for
    --arch, the file's weights for --model."""
    import torch

    from limner.checkpoints.arch import ArchInfo
    from limner.models.latent import Family
    from limner.models.loading import bundle_from_components, load_model, resolve_model

    if cfg.model is not None:
        return load_model(resolve_model(cfg.model), torch_dtype=dtype)
    family, prediction = ARCHES[cfg.arch]
    arch = ArchInfo(family, prediction_type=prediction)
    if cfg.arch == "tiny":
        from limner.checkpoints.tiny import build_tiny_components

        components = build_tiny_components(arch, seed=cfg.seed)
        for module in components.values():
            if isinstance(module, torch.nn.Module):
                module.to(dtype)
    else:
        components = _random_components(arch, dtype, cfg.seed)
    return bundle_from_components(components, name=cfg.arch, family=Family(family))


def _random_components(arch, dtype, seed: int) -> dict:
    """Full-size components with diffusers' default random initialisation, made directly
    in `dtype` (an fp32 copy first would inflate the process's memory)."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from limner.checkpoints.component_configs import (
        build_scheduler,
        default_component_configs,
        load_clip_tokenizer,
        tokenizer_pads,
    )

    configs = default_component_configs(arch)
    previous = torch.get_default_dtype()
    torch.manual_seed(seed)
    torch.set_default_dtype(dtype)
    try:
        components = {
            "unet": UNet2DConditionModel.from_config(configs["unet"]),
            "vae": AutoencoderKL.from_config(configs["vae"]),
            "text_encoder": CLIPTextModel(CLIPTextConfig.from_dict(configs["text_encoder"])),
            "scheduler": build_scheduler(configs["scheduler"]),
        }
        if "text_encoder_2" in configs:
            config_2 = CLIPTextConfig.from_dict(configs["text_encoder_2"])
            components["text_encoder_2"] = CLIPTextModelWithProjection(config_2)
    finally:
        torch.set_default_dtype(previous)
    for name, pad in tokenizer_pads(arch.family).items():
        components[name] = load_clip_tokenizer(pad)
    return components


def _size(cfg: BenchConfig, model) -> tuple[int, int]:
    size = model.default_size
    return cfg.width or size, cfg.height or size


class _LimnerRunner:
    def __init__(self, cfg: BenchConfig, runtime: dict) -> None:
        from limner.runtime.device import RuntimeOptions, resolve_runtime
        from limner.runtime.prepare import prepare_model

        self.cfg = cfg
        self.options = RuntimeOptions.from_dict(runtime)
        resolved = resolve_runtime(self.options)
        self.precision = resolved.precision
        self.weights = resolved.weights
        self.model = prepare_model(_build_components(cfg, resolved.storage_dtype), resolved)
        self.size = _size(cfg, self.model)

    def generate(self, steps: int) -> list[float]:
        """One image; returns the times at which each step ended (from its start)."""
        from limner import api

        cfg = self.cfg
        width, height = self.size
        marks: list[float] = []
        request = api.GenerationRequest(
            prompt=cfg.prompt,
            negative_prompt=cfg.negative_prompt,
            sampler=cfg.sampler,
            steps=steps,
            guidance_scale=cfg.guidance_scale,
            width=width,
            height=height,
            seed=cfg.seed,
        )
        api.generate(
            request,
            model=self.model,
            runtime=self.options,
            on_progress=lambda p: marks.append(time.perf_counter()),
        )
        return marks


class _DiffusersRunner:
    """diffusers' own pipeline with its defaults: fp32, NCHW, its default attention."""

    def __init__(self, cfg: BenchConfig) -> None:
        import torch
        from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

        from limner.diffusion.samplers import make_scheduler, resolve_sampler

        self.cfg = cfg
        self.precision = self.weights = "fp32"
        model = _build_components(cfg, torch.float32)
        self.size = _size(cfg, model)
        parts = dict(model.components)
        parts["scheduler"] = make_scheduler(
            resolve_sampler(cfg.sampler, None), model.scheduler_config
        )
        if "text_encoder_2" in parts:
            self.pipe = StableDiffusionXLPipeline(**parts)
        else:
            self.pipe = StableDiffusionPipeline(
                **parts, safety_checker=None, feature_extractor=None, requires_safety_checker=False
            )
        self.pipe.set_progress_bar_config(disable=True)

    def generate(self, steps: int) -> list[float]:
        import torch

        cfg = self.cfg
        marks: list[float] = []

        def on_step_end(pipe, index, timestep, kwargs):
            marks.append(time.perf_counter())
            return kwargs

        width, height = self.size
        self.pipe(
            prompt=cfg.prompt,
            negative_prompt=cfg.negative_prompt or None,
            num_inference_steps=steps,
            guidance_scale=cfg.guidance_scale,
            width=width,
            height=height,
            generator=torch.Generator("cpu").manual_seed(cfg.seed),
            callback_on_step_end=on_step_end,
        )
        return marks


def _worker(conn, cfg_dict: dict, contender: dict) -> None:
    """A contender's process: build, then answer ("generate", steps) until ("stop",)."""
    import gc
    import warnings

    from limner.runtime.memory import peak_rss_bytes, reset_peak_rss

    warnings.filterwarnings("ignore")
    try:
        cfg, who = BenchConfig(**cfg_dict), Contender(**contender)
        if cfg.arch == "tiny":
            # Toy sizes gain nothing from threads, and OpenMP's spinning workers make
            # each tiny op slow on a busy machine.
            import torch

            torch.set_num_threads(1)
            who.runtime = {**who.runtime, "threads": 1} if who.runtime else {}
        start = time.perf_counter()
        runner = (
            _DiffusersRunner(cfg) if who.kind == "diffusers" else _LimnerRunner(cfg, who.runtime)
        )
        gc.collect()
        conn.send(
            ("ready", time.perf_counter() - start, runner.precision, runner.size, runner.weights)
        )
        while True:
            message = conn.recv()
            if message[0] == "stop":
                break
            gc.collect()
            reset_peak_rss()
            begin = time.perf_counter()
            marks = runner.generate(message[1])
            end = time.perf_counter()
            conn.send(("done", begin, marks, end, peak_rss_bytes()))
    except Exception as err:  # reported to the parent, which raises it with the contender
        conn.send(("error", f"{type(err).__name__}: {err}"))
    finally:
        conn.close()


class _Worker:
    def __init__(self, context, cfg: BenchConfig, contender: Contender) -> None:
        self.contender = contender
        self.conn, child = context.Pipe()
        self.process = context.Process(
            target=_worker, args=(child, asdict(cfg), asdict(contender)), daemon=True
        )
        self.process.start()
        child.close()

    def receive(self):
        try:
            message = self.conn.recv()
        except EOFError:
            raise RuntimeError(f"the {self.contender.name} worker died (out of memory?)") from None
        if message[0] == "error":
            raise RuntimeError(f"{self.contender.name}: {message[1]}")
        return message

    def stop(self) -> None:
        try:
            self.conn.send(("stop",))
        except (BrokenPipeError, OSError):
            pass
        self.process.join(timeout=30)
        if self.process.is_alive():
            self.process.terminate()


# -- the parent --------------------------------------------------------------------------


def contenders(cfg: BenchConfig) -> list[Contender]:
    from limner.runtime.device import RuntimeOptions

    options = RuntimeOptions.from_dict(cfg.runtime) if cfg.runtime else RuntimeOptions()
    plain = {**options.to_dict(), "deepcache": None, "token_merging": 0.0}
    people = []
    if cfg.diffusers:
        people.append(Contender("diffusers", "diffusers", {}))
    people.append(Contender("limner", "limner", plain))
    # Each approximate mode on its own against plain limner, and both together.
    modes = {"deepcache": options.deepcache is not None, "tome": options.token_merging > 0}
    if modes["deepcache"]:
        people.append(
            Contender(
                "limner+deepcache", "limner", {**plain, "deepcache": options.to_dict()["deepcache"]}
            )
        )
    if modes["tome"]:
        people.append(
            Contender("limner+tome", "limner", {**plain, "token_merging": options.token_merging})
        )
    if all(modes.values()):
        people.append(Contender("limner+deepcache+tome", "limner", options.to_dict()))
    return people


def unet_flops_per_step(cfg: BenchConfig) -> float:
    """Floating-point operations of one UNet call at the benchmark size, guidance batch
    included, counted on the meta device (no memory, no compute)."""
    import torch
    from accelerate import init_empty_weights
    from diffusers import UNet2DConditionModel
    from torch.utils.flop_counter import FlopCounterMode

    from limner.checkpoints.arch import ArchInfo
    from limner.checkpoints.component_configs import default_component_configs

    if cfg.model is not None:
        from limner.models.loading import load_model, resolve_model

        config = dict(load_model(resolve_model(cfg.model)).unet.config)
    else:
        family, prediction = ARCHES[cfg.arch]
        arch = ArchInfo(family, prediction_type=prediction)
        if cfg.arch == "tiny":
            from limner.checkpoints.tiny import tiny_component_configs

            config = tiny_component_configs(arch)["unet"]
        else:
            config = default_component_configs(arch)["unet"]
    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(config).eval()
    rows = 2 if cfg.guidance_scale > 1.0 else 1
    sample = config["sample_size"] * 8
    height, width = (cfg.height or sample) // 8, (cfg.width or sample) // 8
    meta = {"device": "meta"}
    x = torch.empty(rows, config["in_channels"], height, width, **meta)
    context = torch.empty(rows, 77, config["cross_attention_dim"], **meta)
    added = None
    if config.get("addition_embed_type") == "text_time":
        pooled = (
            config["projection_class_embeddings_input_dim"] - 6 * config["addition_time_embed_dim"]
        )
        added = {
            "text_embeds": torch.empty(rows, pooled, **meta),
            "time_ids": torch.empty(rows, 6, **meta),
        }
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        unet(x, torch.tensor(500, **meta), encoder_hidden_states=context, added_cond_kwargs=added)
    return float(counter.get_total_flops())


def matmul_rate(
    dtype_name: str, max_size: int = 4096, min_seconds: float = 0.25, repeats: int = 3
) -> float:
    """FLOP/s of a square matrix product on this machine, now (best of `repeats`).

    The size doubles from 256 until one product takes `min_seconds` or reaches
    `max_size`: on a CPU without bf16 units PyTorch emulates bf16 products at a few
    GFLOP/s, and a fixed 4096^3 product would then take minutes (measured on an AVX2
    EPYC: the bench spent over ten minutes here before its first image).
    """
    import torch

    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[dtype_name]
    size = 256
    while True:
        a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
        a @ b  # first call: kernel selection and page faults
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - start)
        if best >= min_seconds or size >= max_size:
            return 2 * size**3 / best
        size *= 2


def _measurement(
    runs: list[tuple], load_seconds: float, precision: str, weights: str
) -> Measurement:
    steps, images, peaks = [], [], []
    for begin, marks, end, peak in runs:
        times = [marks[0] - begin] + [b - a for a, b in zip(marks, marks[1:], strict=False)]
        # The first step also holds prompt encoding; the timed steps are the others.
        steps += times[1:] if len(times) > 1 else times
        images.append(end - begin)
        peaks.append(peak)
    return Measurement(
        step_seconds=statistics.fmean(steps),
        image_seconds=statistics.median(images),
        peak_bytes=max((p for p in peaks if p is not None), default=None),
        load_seconds=load_seconds,
        precision=precision,
        weights=weights,
        step_samples=steps,
        image_samples=images,
    )


def run_bench(cfg: BenchConfig, say=lambda message: None) -> dict:
    """Run the benchmark; returns the report as a JSON-ready dict."""
    import torch

    from limner.runtime.device import detect_cpu, resolve_runtime

    cfg.check()
    cpu = detect_cpu()
    torch.set_num_threads(cpu.physical_cores)
    say(f"cpu: {cpu.describe()}")
    flops = unet_flops_per_step(cfg)
    rates = {name: matmul_rate(name) for name in ("bf16", "fp32")}
    say(f"matmul: bf16 {rates['bf16'] / 1e12:.2f} TFLOP/s, fp32 {rates['fp32'] / 1e12:.2f} TFLOP/s")
    people = contenders(cfg)
    context = multiprocessing.get_context("spawn")
    runs: dict[str, list[tuple]] = {who.name: [] for who in people}
    ready: dict[str, tuple[float, str, str]] = {}
    size = (cfg.width, cfg.height)

    def start(workers: list[_Worker]) -> None:
        nonlocal size
        for worker in workers:  # they build at the same time; wait for all
            _, seconds, precision, size, weights = worker.receive()
            ready[worker.contender.name] = (seconds, precision, weights)
            say(
                f"{worker.contender.name}: ready in {seconds:.1f} s ({precision}, {weights} weights)"
            )
        if cfg.warmup_steps:
            for worker in workers:
                worker.conn.send(("generate", cfg.warmup_steps))
                worker.receive()

    def generate(worker: _Worker, index: int) -> None:
        worker.conn.send(("generate", cfg.steps))
        _, begin, marks, end, peak = worker.receive()
        runs[worker.contender.name].append((begin, marks, end, peak))
        say(f"round {index + 1}: {worker.contender.name} {end - begin:.1f} s")

    if cfg.rounds == 1:
        # Nothing to alternate: one worker alive at a time, so the contenders' memory
        # never adds up (five compiled SD workers at once need more than 24 GB).
        for who in people:
            worker = _Worker(context, cfg, who)
            try:
                start([worker])
                generate(worker, 0)
            finally:
                worker.stop()
    else:
        workers = [_Worker(context, cfg, who) for who in people]
        try:
            start(workers)
            say("warm-up done")
            for index in range(cfg.rounds):
                for worker in workers if index % 2 == 0 else workers[::-1]:
                    generate(worker, index)
        finally:
            for worker in workers:
                worker.stop()
    results = {name: _measurement(runs[name], *ready[name]) for name in runs}
    resolved = resolve_runtime()
    return {
        "config": asdict(cfg),
        "size": list(size),
        "cpu": {
            "name": cpu.name,
            "physical_cores": cpu.physical_cores,
            "bf16_units": cpu.has_bf16,
            "auto_precision": resolved.precision,
        },
        "unet_flops_per_step": flops,
        "matmul_flops_per_second": rates,
        "bound_step_seconds": {name: flops / rate for name, rate in rates.items()},
        "results": {name: asdict(m) for name, m in results.items()},
        "ratios": _ratios(results),
    }


def _ratios(results: dict[str, Measurement]) -> dict:
    base = results.get("diffusers")
    ratios = {}
    for name, m in results.items():
        entry = {}
        if base is not None:
            entry["image_speedup_vs_diffusers"] = base.image_seconds / m.image_seconds
            entry["step_speedup_vs_diffusers"] = base.step_seconds / m.step_seconds
        if name.startswith("limner+"):  # an approximate mode against plain limner
            plain = results["limner"]
            entry["image_speedup_vs_limner"] = plain.image_seconds / m.image_seconds
        ratios[name] = entry
    return ratios


def format_report(report: dict) -> str:
    cfg = report["config"]
    what = f"{cfg['arch']} architecture (random weights)" if cfg["arch"] else cfg["model"]
    size = "x".join(str(n) for n in report["size"])
    rows = 2 if cfg["guidance_scale"] > 1.0 else 1
    flops = report["unet_flops_per_step"]
    rates = report["matmul_flops_per_second"]
    bound = report["bound_step_seconds"]
    lines = [
        f"limner bench: {what}, {size}, {cfg['steps']} steps, {cfg['sampler']}, "
        f"guidance {cfg['guidance_scale']:g} (UNet batch {rows} per step), {cfg['rounds']} round(s)",
        f"cpu: {report['cpu']['name']}, {report['cpu']['physical_cores']} physical cores, "
        f"bf16 units: {'yes' if report['cpu']['bf16_units'] else 'no'}",
        f"UNet work per step: {flops / 1e9:.0f} GFLOP; matmul rate now: bf16 "
        f"{rates['bf16'] / 1e12:.2f} TFLOP/s, fp32 {rates['fp32'] / 1e12:.2f} TFLOP/s",
        f"bound per UNet step: bf16 {bound['bf16']:.2f} s, fp32 {bound['fp32']:.2f} s",
        "",
    ]
    header = (
        "",
        "precision",
        "weights",
        "step (s)",
        "image (s)",
        "peak memory",
        "vs diffusers",
        "step/bound",
    )
    table = [header]
    for name, m in report["results"].items():
        ratio = report["ratios"][name].get("image_speedup_vs_diffusers")
        # A cached or merged step does not do the UNet's full work.
        full_steps = not name.startswith("limner+")
        to_bound = m["step_seconds"] / bound[m["precision"]] if full_steps else None
        table.append(
            (
                name,
                m["precision"],
                m.get("weights", m["precision"]),
                f"{m['step_seconds']:.2f}",
                f"{m['image_seconds']:.1f}",
                f"{m['peak_bytes'] / 1e9:.2f} GB" if m["peak_bytes"] else "-",
                f"{ratio:.2f}x" if ratio is not None else "-",
                f"{to_bound:.2f}x" if to_bound is not None else "-",
            )
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        lines.append(
            "  ".join(
                cell.ljust(w) if i == 0 else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    modes = []
    for name, mode in (
        ("limner+deepcache", "DeepCache"),
        ("limner+tome", "token merging"),
        ("limner+deepcache+tome", "DeepCache and token merging"),
    ):
        over = report["ratios"].get(name, {}).get("image_speedup_vs_limner")
        if over is not None:
            modes.append(f"{mode} over limner: {over:.2f}x per image")
    if modes:
        lines += ["", *modes]
    lines.append(
        "\nstep: mean time per step after the first (UNet with guidance batch); image: prompt + steps + decode; "
        "peak memory: the worker's resident high-water mark during the image; step/bound: "
        "step time over (UNet FLOPs / matmul rate in that precision)."
    )
    return "\n".join(lines)


# -- the command ---------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    what = parser.add_mutually_exclusive_group()
    what.add_argument(
        "--arch",
        choices=tuple(ARCHES),
        default=None,
        help="full-size architecture with random weights (default sd15); tiny: a toy model",
    )
    what.add_argument("-m", "--model", default=None, help="a real model (path or name)")
    parser.add_argument("--quick", action="store_true", help="tiny model, 3 steps: a smoke test")
    parser.add_argument("--prompt", default=DEFAULT_PROMPT)
    parser.add_argument("-n", "--negative-prompt", default="")
    parser.add_argument("-W", "--width", type=int, default=None)
    parser.add_argument("-H", "--height", type=int, default=None)
    parser.add_argument("--steps", type=int, default=20, help="sampling steps (default 20)")
    parser.add_argument("-s", "--sampler", default="DPM++ 2M")
    parser.add_argument("-g", "--guidance", dest="guidance_scale", type=float, default=7.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--rounds", type=int, default=1, help="images per contender, alternating (default 1)"
    )
    parser.add_argument(
        "--warmup-steps", type=int, default=1, help="untimed warm-up image steps (default 1)"
    )
    parser.add_argument(
        "--no-diffusers", dest="diffusers", action="store_false", help="limner only"
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    add_speed_arguments(parser)


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    arch = args.arch
    steps = args.steps
    if args.quick:
        arch, steps = "tiny", min(steps, 3)
    elif arch is None and args.model is None:
        arch = "sd15"
    return BenchConfig(
        arch=arch if args.model is None else None,
        model=args.model,
        prompt=args.prompt,
        negative_prompt=args.negative_prompt,
        width=args.width,
        height=args.height,
        steps=steps,
        sampler=args.sampler,
        guidance_scale=args.guidance_scale,
        seed=args.seed,
        rounds=args.rounds,
        warmup_steps=args.warmup_steps,
        diffusers=args.diffusers,
        runtime=runtime_from_args(args).to_dict(),
    )


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    report = run_bench(cfg, say=lambda message: print(message, file=sys.stderr))
    print(json.dumps(report, indent=1) if args.json else format_report(report))
    return 0
