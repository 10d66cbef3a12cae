"""The `limner` command: a thin layer over `limner.api`.

It parses arguments, builds a `GenerationRequest`, shows progress, and turns a
`LimnerError` into one line on stderr and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from limner.errors import InputFileError, InvalidRequestError, LimnerError
from limner.runtime.cli_options import add_speed_arguments, runtime_from_args, runtime_if_given

EPILOG = "Models: a .safetensors file, a diffusers folder, or a name in $LIMNER_HOME/models."


def _add_generation_options(parser: argparse.ArgumentParser, *, mode: str) -> None:
    parser.add_argument(
        "prompt",
        nargs="?",
        default=None,
        help="what to draw (A1111 syntax: (word:1.3), [word], BREAK)",
    )
    g = parser.add_argument_group("generation")
    g.add_argument("-n", "--negative-prompt", default="", help="what to avoid")
    g.add_argument(
        "-m",
        "--model",
        default=None,
        help="model path or registered name (default: the built-in model)",
    )
    g.add_argument(
        "-s",
        "--sampler",
        default="DPM++ 2M",
        help="sampler, as A1111 names it (see --list-samplers)",
    )
    g.add_argument(
        "--schedule", default=None, help="schedule type: Automatic, Karras or Exponential"
    )
    g.add_argument("--steps", type=int, default=20, help="sampling steps (default 20)")
    g.add_argument(
        "-g",
        "--guidance",
        "--cfg-scale",
        dest="guidance_scale",
        type=float,
        default=7.0,
        help="classifier-free guidance scale (default 7; 1 turns guidance off)",
    )
    g.add_argument(
        "--guidance-rescale", type=float, default=0.0, help="guidance rescale 0..1 (default 0)"
    )
    g.add_argument("-W", "--width", type=int, default=None, help="width in pixels, a multiple of 8")
    g.add_argument(
        "-H", "--height", type=int, default=None, help="height in pixels, a multiple of 8"
    )
    g.add_argument(
        "--seed",
        type=int,
        default=None,
        help="seed of the first image; the next get seed+1, ... (default: random)",
    )
    g.add_argument(
        "-b", "--batch-size", type=int, default=1, help="images generated together (default 1)"
    )
    g.add_argument(
        "--batch-count", type=int, default=1, help="batches run one after another (default 1)"
    )
    g.add_argument(
        "--eta",
        type=float,
        default=None,
        help="noise multiplier: DDIM (default 0: deterministic) and Euler a (default 1)",
    )
    g.add_argument(
        "--clip-skip",
        type=int,
        default=1,
        help="skip the last N-1 text encoder layers, as A1111 (default 1)",
    )
    g.add_argument(
        "-o",
        "--output",
        default=None,
        help="a .png file or a folder (default: $LIMNER_HOME/outputs)",
    )
    g.add_argument("--list-samplers", action="store_true", help="list the samplers and exit")
    r = parser.add_argument_group("ranking (as DALL-E: make several, keep the best by CLIP score)")
    r.add_argument(
        "--candidates", type=int, default=None, metavar="N", help="make N images and rank them"
    )
    r.add_argument(
        "--keep", type=int, default=None, metavar="K", help="keep the K best candidates (default 1)"
    )
    r.add_argument(
        "--clip",
        default=None,
        metavar="PATH",
        help="CLIP model folder, transformers format (default: limner's small CLIP)",
    )
    add_speed_arguments(parser)
    if mode == "txt2img":
        g.add_argument(
            "--from",
            dest="from_image",
            default=None,
            metavar="IMAGE",
            help="reproduce a limner PNG from the request stored in it",
        )
    if mode in ("img2img", "inpaint", "outpaint"):
        parser.add_argument("-i", "--image", required=True, help="the input image")
        default_strength = 1.0 if mode == "outpaint" else 0.75
        g.add_argument(
            "--strength",
            type=float,
            default=default_strength,
            help=f"denoising strength 0..1: how much to change (default {default_strength})",
        )
    if mode == "inpaint":
        parser.add_argument(
            "--mask", required=True, help="mask image, same size as the image: white is repainted"
        )
    if mode in ("inpaint", "outpaint"):
        g.add_argument(
            "--mask-blur", type=int, default=4, help="blur of the mask edge in pixels (default 4)"
        )
        g.add_argument(
            "--no-keep-unmasked",
            dest="keep_unmasked",
            action="store_false",
            help="do not paste the original pixels back outside the mask",
        )
    if mode == "outpaint":
        for side in ("left", "right", "up", "down"):
            g.add_argument(
                f"--{side}", type=int, default=0, help=f"pixels to add {side} (a multiple of 8)"
            )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="limner", description="Image synthesis on your own machine.", epilog=EPILOG
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, mode, text in [
        ("generate", "txt2img", "make images from a text prompt"),
        ("img2img", "img2img", "change an image (photo or sketch) guided by a prompt"),
        ("inpaint", "inpaint", "repaint the white area of a mask"),
        ("outpaint", "outpaint", "extend an image beyond its borders"),
    ]:
        p = sub.add_parser(name, help=text, description=text, epilog=EPILOG)
        _add_generation_options(p, mode=mode)
        p.set_defaults(handler=_generate, mode=mode)
    p = sub.add_parser(
        "info", help="show how a PNG was made", description="show how a PNG was made"
    )
    p.add_argument("image")
    p.add_argument("--json", action="store_true", help="print limner's stored request as JSON")
    p.set_defaults(handler=_info)
    p = sub.add_parser(
        "models",
        help="list the models limner can use",
        description="list the models limner can use",
    )
    p.add_argument(
        "--no-hash", action="store_true", help="skip hashing (faster for large checkpoints)"
    )
    p.set_defaults(handler=_models)
    p = sub.add_parser(
        "convert",
        help="convert a pickle checkpoint (.ckpt/.pt/.bin) to .safetensors",
        description="Convert a pickle checkpoint to safetensors. Only tensors are read "
        "(torch.load with weights_only=True): no code in the file is run.",
    )
    p.add_argument("input")
    p.add_argument("output")
    p.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    p.set_defaults(handler=_convert)
    p = sub.add_parser(
        "serve",
        help="run the HTTP server: web studio, native, A1111 and OpenAI APIs",
        description="Run limner as a local service: the web studio at /, the native API "
        "at /api/v1, A1111's at /sdapi/v1 and OpenAI's at /v1/images, with a durable queue.",
        epilog=EPILOG,
    )
    from limner.server.cli import add_arguments as add_serve_arguments

    add_serve_arguments(p)
    p.set_defaults(handler=_serve)
    p = sub.add_parser(
        "data", help="build training datasets", description="build training datasets"
    )
    data_sub = p.add_subparsers(dest="dataset", metavar="DATASET", required=True)
    p = data_sub.add_parser(
        "emoji",
        help="captioned emoji scenes for the built-in model (Noto Color Emoji, OFL-1.1)",
        description="Build the captioned emoji-scene dataset of limner's built-in model, "
        "deterministically, from the Noto Color Emoji font.",
    )
    from limner.data.emoji import add_arguments as add_emoji_arguments

    add_emoji_arguments(p)
    p.set_defaults(handler=_data_emoji)
    _add_train_command(sub)
    _add_eval_command(sub)
    p = sub.add_parser(
        "bench",
        help="measure limner against stock diffusers on this machine",
        description="Run limner and stock diffusers (fp32, its defaults) on the same model, "
        "prompt, seed, size, steps and sampler, alternating, and print per-step and "
        "per-image times, peak memory, their ratio and the UNet's compute bound. "
        "--arch builds a full-size architecture with random weights (no download).",
        epilog=EPILOG,
    )
    from limner.bench import add_arguments as add_bench_arguments

    add_bench_arguments(p)
    p.set_defaults(handler=_bench)
    return parser


def _bench(args: argparse.Namespace) -> int:
    from limner.bench import run

    return run(args)


def _add_eval_command(sub) -> None:
    p = sub.add_parser(
        "eval",
        help="score a model on the held-out emoji prompts with the evaluator",
        description="Draw the held-out prompts of the emoji dataset and score the pictures "
        "with the evaluator (trained on real renders only): recognition of single emoji, "
        "placement in scenes, held-out synonyms, a Frechet distance; real renders of the "
        "same scenes give the ceiling.",
        epilog=EPILOG,
    )
    p.add_argument("-m", "--model", default=None, help="model (default: the built-in model)")
    p.add_argument(
        "--quick", action="store_true", help="20 prompts instead of 200 (about a minute)"
    )
    p.add_argument("--count", type=int, default=None, help="held-out prompts to draw")
    p.add_argument("--steps", type=int, default=25, help="sampling steps (default 25)")
    p.add_argument(
        "-g", "--guidance", dest="guidance_scale", type=float, default=7.0, help="(default 7)"
    )
    p.add_argument("-s", "--sampler", default="DPM++ 2M", help="sampler (default DPM++ 2M)")
    p.add_argument("--seed", type=int, default=0, help="prompt i is drawn with seed + i")
    p.add_argument(
        "--data", type=Path, default=None, help="dataset folder (default: built in the cache)"
    )
    p.add_argument(
        "--evaluator", type=Path, default=None, help="evaluator folder (default: built-in)"
    )
    p.add_argument(
        "--candidates",
        type=int,
        default=None,
        metavar="N",
        help="make N candidates per prompt and score the one the CLIP model ranks first "
        "(as `generate --candidates N --keep 1`)",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument(
        "--real-only",
        action="store_true",
        help="score only the real renders (the evaluator's accuracy: the ceiling)",
    )
    p.add_argument(
        "--grid", type=Path, default=None, help="also write a PNG grid of the first 20 prompts"
    )
    add_speed_arguments(p)  # the fast path's modes, to measure what they cost in quality
    p.set_defaults(handler=_eval)


def _eval(args: argparse.Namespace) -> int:
    import json

    from tqdm import tqdm

    from limner.evaluation.run import (
        FULL_COUNT,
        QUICK_COUNT,
        EvalConfig,
        evaluate,
        format_report,
        save_grid,
    )

    count = args.count or (QUICK_COUNT if args.quick else FULL_COUNT)
    cfg = EvalConfig(
        model=args.model,
        data=args.data,
        evaluator=args.evaluator,
        count=count,
        steps=args.steps,
        guidance_scale=args.guidance_scale,
        sampler=args.sampler,
        seed=args.seed,
        real_only=args.real_only,
        candidates=args.candidates,
        runtime=runtime_from_args(args),
    )
    bar = tqdm(desc="drawing", unit="image", file=sys.stderr, disable=args.real_only)

    def on_image(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    def say(message: str) -> None:
        print(message, file=sys.stderr)

    report, drawn = evaluate(cfg, say=say, on_image=on_image)
    bar.close()
    if args.grid is not None and drawn:
        say(f"grid: {save_grid(drawn[:20], args.grid)}")
    print(json.dumps(report.to_json(), indent=1) if args.json else format_report(report))
    return 0


def _add_train_command(sub) -> None:
    """`limner train NAME`: one subcommand per trainer registered in limner.training."""
    from limner.training import trainers

    p = sub.add_parser(
        "train",
        help="train the built-in model's parts",
        description="Train the built-in model's parts on a dataset from `limner data emoji`.",
    )
    train_sub = p.add_subparsers(dest="trainer", metavar="PART", required=True)
    for name, trainer in trainers().items():
        tp = train_sub.add_parser(name, help=trainer.help, description=f"Train {trainer.help}.")
        trainer.add_arguments(tp)
        tp.set_defaults(handler=trainer.run)


def _serve(args: argparse.Namespace) -> int:
    from limner.server.cli import run

    return run(args)


def _data_emoji(args: argparse.Namespace) -> int:
    from limner.data.emoji import run

    return run(args)


def _request_from_args(args: argparse.Namespace):
    from pydantic import ValidationError

    from limner.api import GenerationRequest, Outpaint
    from limner.requests import describe_validation_error

    fields = dict(
        mode=args.mode,
        prompt=args.prompt or "",
        negative_prompt=args.negative_prompt,
        model=args.model,
        sampler=args.sampler,
        schedule=args.schedule,
        steps=args.steps,
        guidance_scale=args.guidance_scale,
        guidance_rescale=args.guidance_rescale,
        width=args.width,
        height=args.height,
        seed=args.seed,
        batch_size=args.batch_size,
        batch_count=args.batch_count,
        eta=args.eta,
        clip_skip=args.clip_skip,
        candidates=args.candidates,
        clip=str(Path(args.clip).expanduser().resolve()) if args.clip else None,
    )
    if args.keep is not None:
        fields["keep"] = args.keep
    if args.mode != "txt2img":
        fields.update(
            init_image=str(Path(args.image).expanduser().resolve()), strength=args.strength
        )
        if not Path(args.image).expanduser().is_file():
            raise InvalidRequestError(f"input image not found: {args.image}")
    if args.mode == "inpaint":
        if not Path(args.mask).expanduser().is_file():
            raise InvalidRequestError(f"mask not found: {args.mask}")
        fields.update(mask=str(Path(args.mask).expanduser().resolve()))
    if args.mode in ("inpaint", "outpaint"):
        fields.update(mask_blur=args.mask_blur, keep_unmasked=args.keep_unmasked)
    try:
        if args.mode == "outpaint":
            fields["outpaint"] = Outpaint(
                left=args.left, right=args.right, up=args.up, down=args.down
            )
        return GenerationRequest(**fields)
    except ValidationError as err:
        raise InvalidRequestError(describe_validation_error(err)) from None


class _ProgressBar:
    """A tqdm bar per batch with steps/s and the time left."""

    def __init__(self) -> None:
        self.bar = None
        self.batch = -1

    def __call__(self, progress) -> None:
        from tqdm import tqdm

        if progress.batch != self.batch:
            self.close()
            self.batch = progress.batch
            label = (
                f"batch {progress.batch + 1}/{progress.batch_count}"
                if progress.batch_count > 1
                else "sampling"
            )
            self.bar = tqdm(
                total=progress.step.total, desc=label, unit="step", file=sys.stderr, leave=True
            )
        self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _generate(args: argparse.Namespace) -> int:
    from limner import api
    from limner.diffusion.samplers import SAMPLERS

    if args.list_samplers:
        for name, spec in SAMPLERS.items():
            print(
                f"{name:14s} {spec.description} (default schedule: {spec.default_schedule.value})"
            )
        return 0
    bar = _ProgressBar()
    if getattr(args, "from_image", None):
        image = api.generate_from(args.from_image, on_progress=bar, runtime=runtime_if_given(args))
        bar.close()
        paths = api.save_images([image], args.output)
    else:
        if args.prompt is None and args.mode == "txt2img":
            raise InvalidRequestError(
                'give a prompt, e.g. limner generate "a red apple on a table"'
            )
        request = _request_from_args(args)
        images = api.generate(request, on_progress=bar, runtime=runtime_from_args(args))
        bar.close()
        paths = api.save_images(images, args.output)
    for path in paths:
        print(path)
    return 0


def _info(args: argparse.Namespace) -> int:
    import json

    from limner import api

    info = api.image_info(args.image)
    if args.json:
        if info.request is None:
            raise LimnerError(f"{args.image} has no limner request stored")
        print(json.dumps(info.request, indent=2, sort_keys=True))
        return 0
    if info.parameters is None and info.request is None:
        raise InputFileError(f"{args.image} carries no generation parameters")
    if info.parameters:
        print(info.parameters)
    if info.request:
        sha = info.request.get("model_sha256")
        print(f"\nlimner request (index {info.request.get('index', 0)}, model sha256 {sha}):")
        print(json.dumps(info.request.get("request", {}), sort_keys=True))
    return 0


def _models(args: argparse.Namespace) -> int:
    from limner import api

    rows = [("NAME", "ARCHITECTURE", "SIZE", "HASH", "PATH")]
    for m in api.list_models(with_hashes=not args.no_hash):
        rows.append(
            (
                m.name,
                m.architecture,
                _human_size(m.size_bytes),
                m.short_hash or "-",
                str(m.path or ""),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)) + "  " + r[4])
    return 0


def _human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"


def _convert(args: argparse.Namespace) -> int:
    from limner import api

    count = api.convert_checkpoint(args.input, args.output, overwrite=args.overwrite)
    print(f"wrote {count} tensors to {args.output}")
    return 0


def _quiet_libraries() -> None:
    """Our own warnings as one line each; the libraries' loading bars and chatter off."""
    warnings.showwarning = lambda message, *a, **k: print(f"warning: {message}", file=sys.stderr)
    # torchsde warns about float rounding at the ends of its Brownian interval.
    warnings.filterwarnings("ignore", module="torchsde")
    try:
        import diffusers.utils.logging as diffusers_logging
        import transformers.utils.logging as transformers_logging
    except ImportError:  # pragma: no cover - both are dependencies
        return
    transformers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()
    diffusers_logging.disable_progress_bar()
    diffusers_logging.set_verbosity_error()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from limner import __version__

        print(f"limner {__version__}")
        return 0
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    _quiet_libraries()
    try:
        return args.handler(args)
    except LimnerError as err:
        print(f"limner: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("limner: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
