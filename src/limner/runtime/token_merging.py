"""Token merging for Stable Diffusion (ToMe; Bolya & Hoffman 2023, arXiv:2303.17604).

The self-attentions at a UNet's full latent resolution cost the most of a step on a CPU
(SD 1.5 at 512x512: 4096 tokens, 16.8 M scores per head, softmax-bound) while
neighbouring tokens are often near copies. Before each such self-attention the tokens
are split into destinations, one per 2x2 cell, and sources, the other three; the
`ratio` x N sources most similar (cosine) to their best destination are averaged into
it, the attention runs on the rest, and afterwards each merged source takes its
destination's output. With ratio 0.5 the attention sees half the tokens: a quarter of
the scores. It changes the image (an approximation, opt-in): A1111 calls the setting
"Token merging ratio" and writes it into the infotext.

As in ToMe for SD's defaults: only the self-attention is merged (cross-attention and the
feed-forward layer see every token), only at full latent resolution (SDXL has no
attention there, so it is unchanged). The destination of each cell is drawn from the
image's seed (the same seed gives the same picture, in any batch) and differs from layer
to layer, but not from step to step: nothing in the forward pass changes Python state,
so a compiled UNet is not recompiled at every call.
"""

from __future__ import annotations

import itertools
import weakref
from dataclasses import dataclass, field

import torch
from diffusers.models.attention_processor import Attention

from limner.runtime.device import check_token_merging_ratio


def _gather_rows(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x (B, N, C), index (B, K) -> (B, K, C)."""
    return x.gather(1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


@dataclass(frozen=True)
class MergePlan:
    """Which tokens of a (B, N, C) sequence merge into which, for one attention call.

    `src` and `dst` (B, ·) are positions in the sequence; `kept` and `merged` (B, ·)
    index `src`; `target` (B, r) indexes `dst`: merged source i goes into
    dst[target[i]]."""

    tokens: int
    src: torch.Tensor
    dst: torch.Tensor
    kept: torch.Tensor
    merged: torch.Tensor
    target: torch.Tensor

    @classmethod
    def build(
        cls, x: torch.Tensor, height: int, width: int, ratio: float, cell_choice: torch.Tensor
    ) -> MergePlan:
        """The plan for tokens x (B, height*width, C) in row-major order; `cell_choice`
        (B, height//2, width//2) says, for each row of the batch, which of each 2x2
        cell's four tokens (0 top left, 1 top right, 2 bottom left, 3 bottom right) is its
        destination. Rows or columns left over by odd sizes are sources."""
        b, n, _ = x.shape
        rows, cols = height // 2, width // 2
        cell_y = torch.arange(rows).view(1, -1, 1) * 2 + cell_choice // 2
        cell_x = torch.arange(cols).view(1, 1, -1) * 2 + cell_choice % 2
        dst = (cell_y * width + cell_x).flatten(1)  # (B, rows*cols)
        is_dst = torch.zeros(b, n, dtype=torch.int8).scatter_(1, dst, 1)
        # The sources, in token order: shapes known before the data (no nonzero), so a
        # compiled UNet keeps one graph.
        src = torch.argsort(is_dst, dim=1, stable=True)[:, : n - dst.shape[1]]
        r = min(int(n * ratio), src.shape[1])
        metric = x / x.norm(dim=-1, keepdim=True).clamp_min(1e-6)
        scores = _gather_rows(metric, src) @ _gather_rows(metric, dst).transpose(1, 2)
        best, best_dst = scores.max(dim=-1)
        order = best.argsort(dim=-1, descending=True)
        merged, kept = order[:, :r], order[:, r:]
        target = best_dst.gather(1, merged)
        return cls(n, src, dst, kept, merged, target)

    def merge(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, C) -> (B, N - r, C): the kept sources, then the destinations, each the
        mean of itself and the sources merged into it."""
        src, dst = _gather_rows(x, self.src), _gather_rows(x, self.dst)
        moving = _gather_rows(src, self.merged)
        into = self.target.unsqueeze(-1).expand(-1, -1, x.shape[-1])
        dst = dst.scatter_reduce(1, into, moving, reduce="mean", include_self=True)
        return torch.cat([_gather_rows(src, self.kept), dst], dim=1)

    def unmerge(self, y: torch.Tensor) -> torch.Tensor:
        """(B, N - r, C) -> (B, N, C): every token gets its own output back, a merged
        source its destination's."""
        b, _, c = y.shape
        kept_count = self.kept.shape[1]
        y_kept, y_dst = y[:, :kept_count], y[:, kept_count:]
        src_out = y.new_empty(b, self.src.shape[1], c)
        src_out.scatter_(1, self.kept.unsqueeze(-1).expand(-1, -1, c), y_kept)
        src_out.scatter_(
            1, self.merged.unsqueeze(-1).expand(-1, -1, c), _gather_rows(y_dst, self.target)
        )
        out = y.new_empty(b, self.tokens, c)
        out.scatter_(1, self.dst.unsqueeze(-1).expand(-1, -1, c), y_dst)
        out.scatter_(1, self.src.unsqueeze(-1).expand(-1, -1, c), src_out)
        return out


# Each state's destinations, (images, height // 2, width // 2), drawn from the seeds.
# Kept here, outside the UNet: torch.compile takes a tensor it reaches through a module's
# attributes for a weight, and with inductor's freezing (limner's --compile) a weight is
# a constant of the graph and guarded by identity, so each new seed would recompile the
# UNet. A tensor reached through a global is an input of the graph, like the latents.
_CELL_CHOICES: dict[int, torch.Tensor] = {}
_STATE_KEYS = itertools.count()


@dataclass
class TokenMergingState:
    """The settings of the current generation, shared by a UNet's merging processors.
    `ratio` 0 turns merging off (the processors then call through unchanged)."""

    ratio: float = 0.0
    height: int = 0  # the latent's size: attention at height x width tokens is merged
    width: int = 0
    key: int = field(default_factory=lambda: next(_STATE_KEYS))

    def __post_init__(self) -> None:
        weakref.finalize(self, _CELL_CHOICES.pop, self.key, None)

    def plan_for(self, x: torch.Tensor, layer: int) -> MergePlan | None:
        if self.ratio <= 0 or x.ndim != 3 or x.shape[1] != self.height * self.width:
            return None
        cell_choice = _CELL_CHOICES[self.key]
        images = cell_choice.shape[0]
        if x.shape[0] % images:
            return None  # not this generation's batch
        # Guidance stacks the batch (unconditional rows, then conditional): row j is
        # image j % images. Another destination in each layer.
        choice = (cell_choice.repeat(x.shape[0] // images, 1, 1) + layer) % 4
        return MergePlan.build(x, self.height, self.width, self.ratio, choice)


class TokenMergingProcessor:
    """Wraps a self-attention's processor: merge, attend, unmerge (when the state says)."""

    def __init__(self, base, state: TokenMergingState, layer: int) -> None:
        self.base = base
        self.state = state
        self.layer = layer

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        *args,
        **kwargs,
    ) -> torch.Tensor:
        plan = None
        if encoder_hidden_states is None and attention_mask is None:
            plan = self.state.plan_for(hidden_states, self.layer)
        if plan is None:
            return self.base(
                attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs
            )
        out = self.base(attn, plan.merge(hidden_states), None, None, temb, *args, **kwargs)
        return plan.unmerge(out)


def _self_attentions(unet: torch.nn.Module) -> list[Attention]:
    """The self-attentions (attn1) of the UNet's transformer blocks."""
    return [
        module
        for name, module in unet.named_modules()
        if isinstance(module, Attention)
        and name.endswith(".attn1")
        and not module.is_cross_attention
    ]


def set_token_merging(
    unet: torch.nn.Module,
    ratio: float,
    latent_height: int,
    latent_width: int,
    seeds: list[int],
) -> TokenMergingState | None:
    """Merge tokens at `ratio` in the next calls of `unet`, whose latents are
    latent_height x latent_width, for a batch of images with these `seeds`: each
    image's destinations are drawn from its own seed, so that an image comes out the
    same whatever batch it is made in. The first call
    with a ratio above 0 wraps the UNet's self-attention processors (kept from then on:
    a compiled UNet is not recompiled for each image); ratio 0 makes them call through.
    Returns the shared state (None when the UNet was never merged)."""
    check_token_merging_ratio(ratio)
    unet = getattr(unet, "_orig_mod", unet)  # a torch.compile'd UNet: its module
    attentions = _self_attentions(unet)
    states = {
        id(a.processor.state): a.processor.state
        for a in attentions
        if isinstance(a.processor, TokenMergingProcessor)
    }
    if ratio == 0 and not states:
        return None
    state = next(iter(states.values())) if len(states) == 1 else TokenMergingState()
    for layer, attention in enumerate(attentions):
        processor = attention.processor
        if isinstance(processor, TokenMergingProcessor):
            if processor.state is state:
                continue
            processor = processor.base
        attention.set_processor(TokenMergingProcessor(processor, state, layer))
    state.ratio, state.height, state.width = ratio, latent_height, latent_width
    cells = (latent_height // 2, latent_width // 2)
    _CELL_CHOICES[state.key] = torch.stack(
        [torch.randint(4, cells, generator=torch.Generator().manual_seed(s)) for s in seeds]
    )
    return state
