"""`python -m limner.evaluation.text_probe --data DIR`: how well the built-in model's frozen
text encoder alone tells which concept a held-out synonym names.

Every held-out synonym of an emoji dataset goes into the caption `TEMPLATE` ("a toadstool
on blue"), every concept's name into the same caption ("a mushroom on blue"), and each is
encoded as the built-in UNet sees a prompt: MiniLM's 77 token states, [CLS] caption [SEP]
then padding, masked after [SEP] (`limner.models.text.TokenEncoder`). The synonym's
caption then retrieves the concepts by cosine similarity, top-1 and top-5, compared in two
ways: the mean of the caption's own token states (MiniLM's sentence embedding, what it was
trained to make similar for paraphrases) and the whole 77x384 context the UNet attends to.

A UNet that answered nearby contexts with nearby images would draw the right emoji for a
synonym about as often as the second figure says, times its rate for the trained names:
the probe separates what the text encoder loses from what the UNet loses. It also prints
the scales that `limner train unet --context-noise` is chosen against: the RMS of a
context, of the difference between a synonym's and its name's contexts, and of the
difference between two different concepts' contexts.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from limner.errors import InvalidRequestError, LimnerError

TEMPLATE = "a {} on blue"


@dataclass
class TextProbe:
    synonyms: int  # held-out synonyms probed
    concepts: int  # names they are retrieved among
    sentence_top1: float  # by the mean of the caption's token states
    sentence_top5: float
    context_top1: float  # by the whole (77, D) context
    context_top5: float
    context_rms: float  # of the names' contexts
    synonym_diff_rms: float  # synonym's context - its name's
    other_diff_rms: float  # one name's context - another name's


def _encode(tokenizer, encoder, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 77, D) token states and the (N, D) mean of each caption's unmasked states."""
    from limner.models.builtin import encode_captions

    states, mask = encode_captions(tokenizer, encoder, captions)
    weights = mask.unsqueeze(-1).to(states.dtype)
    return states, (states * weights).sum(1) / weights.sum(1)


def _rates(queries: torch.Tensor, keys: torch.Tensor, answers: torch.Tensor) -> tuple[float, float]:
    """Top-1 and top-5 retrieval of `answers` (N,) by cosine between rows."""
    q = torch.nn.functional.normalize(queries.flatten(1), dim=-1)
    k = torch.nn.functional.normalize(keys.flatten(1), dim=-1)
    top = (q @ k.T).topk(min(5, k.shape[0]), dim=1).indices
    return (
        (top[:, 0] == answers).float().mean().item(),
        (top == answers[:, None]).any(1).float().mean().item(),
    )


def _rms(x: torch.Tensor) -> float:
    return x.pow(2).mean().sqrt().item()


def probe_synonyms(dataset_dir: str | Path, template: str = TEMPLATE) -> TextProbe:
    from limner.data.emoji import EmojiDataset
    from limner.models.builtin import load_text_encoder

    if "{}" not in template:
        raise InvalidRequestError(f"--template needs a {{}} for the name: {template!r}")
    concepts = EmojiDataset(dataset_dir, "heldout").concepts
    asked = [(i, s) for i, c in enumerate(concepts) for s in c.heldout_synonyms]
    if not asked:
        raise InvalidRequestError(f"{dataset_dir}: the dataset holds no held-out synonyms")
    tokenizer, encoder = load_text_encoder(torch.float32)
    encoder.eval()
    names, names_mean = _encode(tokenizer, encoder, [template.format(c.name) for c in concepts])
    syns, syns_mean = _encode(tokenizer, encoder, [template.format(s) for _, s in asked])
    answers = torch.tensor([i for i, _ in asked])
    sentence = _rates(syns_mean, names_mean, answers)
    context = _rates(syns, names, answers)
    return TextProbe(
        synonyms=len(asked),
        concepts=len(concepts),
        sentence_top1=sentence[0],
        sentence_top5=sentence[1],
        context_top1=context[0],
        context_top5=context[1],
        context_rms=_rms(names),
        synonym_diff_rms=_rms(syns - names[answers]),
        other_diff_rms=_rms(names - names.roll(1, 0)) if len(concepts) > 1 else 0.0,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m limner.evaluation.text_probe", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--data", required=True, help="an emoji dataset (`limner data emoji`)")
    parser.add_argument("--template", default=TEMPLATE, help=f"caption (default {TEMPLATE!r})")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        result = probe_synonyms(args.data, args.template)
    except LimnerError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(asdict(result), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
