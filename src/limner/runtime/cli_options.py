"""The speed options shared by `limner generate`/`img2img`/... and `limner bench`.

Kept free of torch imports, so that building the argument parser stays fast.
"""

from __future__ import annotations

import argparse


def add_speed_arguments(parser: argparse.ArgumentParser) -> None:
    s = parser.add_argument_group("speed")
    s.add_argument(
        "--precision",
        choices=("auto", "bf16", "fp32"),
        default="auto",
        help="compute precision: auto is bf16 where this CPU computes it faster than fp32, else fp32",
    )
    s.add_argument(
        "--deepcache",
        type=int,
        nargs="?",
        const=2,  # DeepCache's authors use 3 with SD; on the built-in model 3 cost quality
        default=None,
        metavar="N",
        help="DeepCache: run the whole UNet every N-th step only, reusing its deep features "
        "in between (default N 2; 3 is faster and further from full steps)",
    )
    s.add_argument(
        "--deepcache-branch",
        type=int,
        default=0,
        metavar="B",
        help="DeepCache skip-branch depth: larger is slower and closer (default 0)",
    )
    s.add_argument(
        "--token-merging",
        "--tome",
        type=float,
        default=0.0,
        metavar="RATIO",
        help="token merging (ToMe for SD, A1111's 'Token merging ratio'): merge this share "
        "of the tokens before each full-resolution self-attention, 0 to 0.75; faster, "
        "changes the image (0.5 is the usual choice; default 0: off)",
    )
    s.add_argument(
        "--compile", action="store_true", help="torch.compile the UNet (slow first image)"
    )
    s.add_argument("--threads", type=int, default=None, help="threads (default: physical cores)")
    s.add_argument(
        "--no-channels-last",
        dest="channels_last",
        action="store_false",
        help="keep the NCHW memory layout",
    )
    s.add_argument(
        "--preview-decoder",
        default=None,
        metavar="PATH",
        help="a TAESD-format tiny decoder (.safetensors) for previews and --fast-decode",
    )
    s.add_argument(
        "--fast-decode",
        action="store_true",
        help="decode the final image with the --preview-decoder instead of the VAE",
    )
    s.add_argument(
        "--low-memory",
        action="store_true",
        help="free the text encoder after encoding, and keep fp32 runs' weights in fp16 "
        "(half their memory, about 10%% slower; default: each only when memory is tight)",
    )


def runtime_from_args(args: argparse.Namespace):
    """A `RuntimeOptions` from parsed speed arguments."""
    from limner.runtime.device import DeepCacheOptions, RuntimeOptions

    deepcache = None
    if args.deepcache is not None:
        deepcache = DeepCacheOptions(interval=args.deepcache, branch=args.deepcache_branch)
    options = RuntimeOptions(
        precision=args.precision,
        channels_last=args.channels_last,
        threads=args.threads,
        deepcache=deepcache,
        compile=args.compile,
        tiny_decoder=args.preview_decoder,
        fast_decode=args.fast_decode,
        release_text_encoder=True if args.low_memory else None,
        fp16_weights=True if args.low_memory else None,
        token_merging=args.token_merging,
    )
    return options


def runtime_if_given(args: argparse.Namespace):
    """`runtime_from_args`, or None when every speed option is at its default (so that
    `--from` uses the settings stored in the PNG)."""
    from limner.runtime.device import RuntimeOptions

    options = runtime_from_args(args)
    return None if options == RuntimeOptions() else options
