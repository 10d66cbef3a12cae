"""`python -m limner.training.showcase`: a grid of the built-in model's images with
their prompts, made through the public API exactly as `limner generate` makes them.

    python -m limner.training.showcase --out src/limner/builtin/showcase.png

Prompts are held-out captions of the emoji dataset when --data is given (pairs,
templates and synonyms the model never saw), else the fixed list below.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

PROMPTS = (
    "a red apple",
    "a dog on a blue background",
    "a cat to the left of a pizza",
    "a big star on a yellow background",
    "a rocket to the right of a house",
    "a small heart on a green background",
    "a tree and a sun",
    "a grinning face on a purple background",
)


def showcase(
    out: Path,
    prompts: list[str],
    *,
    model: str | None = None,
    seed: int = 0,
    steps: int = 25,
    guidance: float = 5.0,
    sampler: str = "DPM++ 2M",
    columns: int = 4,
    threads: int | None = None,
) -> Path:
    from limner import api
    from limner.runtime.device import RuntimeOptions
    from limner.training.common import image_grid

    runtime = RuntimeOptions(threads=threads)

    images = []
    for k, prompt in enumerate(prompts):
        request = api.GenerationRequest(
            prompt=prompt,
            model=model,
            seed=seed + k,
            steps=steps,
            guidance_scale=guidance,
            sampler=sampler,
        )
        images.append(np.array(api.generate(request, runtime=runtime)[0].image.convert("RGB")))
    captions = [f"{p} (seed {seed + k})" for k, p in enumerate(prompts)]
    out.parent.mkdir(parents=True, exist_ok=True)
    image_grid(images, columns=columns, captions=captions).save(out)
    return out


def heldout_prompts(data: str, count: int) -> list[str]:
    from limner.data.emoji import EmojiDataset

    ds = EmojiDataset(data, "heldout")
    step = max(1, len(ds) // count)
    return [ds.record(i)["caption"] for i in range(0, step * count, step)][:count]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m limner.training.showcase", description=__doc__)
    p.add_argument("--out", type=Path, required=True, help="PNG to write")
    p.add_argument("--data", default=None, help="take held-out captions from this dataset")
    p.add_argument("--count", type=int, default=8)
    p.add_argument("--model", default=None, help="model (default: the built-in one)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--guidance", type=float, default=5.0)
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: cores)")
    args = p.parse_args(argv)
    prompts = heldout_prompts(args.data, args.count) if args.data else list(PROMPTS)[: args.count]
    path = showcase(
        args.out,
        prompts,
        model=args.model,
        seed=args.seed,
        steps=args.steps,
        guidance=args.guidance,
    )
    print(path, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
