"""Prompt encoders: A1111 prompt syntax in, cross-attention conditioning out.

One algorithm serves every text encoder (CLIP for SD 1.x/2.x, two CLIPs for SDXL, MiniLM
for the built-in model): parse `(word:1.3)` weights, tokenize into 75-token chunks,
encode each chunk wrapped in BOS/EOS/padding, apply the weights ("Original" emphasis),
and concatenate the chunks along the token axis, as A1111 does for long prompts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from limner.prompts.chunks import (
    TokenChunk,
    apply_emphasis,
    pad_chunk,
    pad_chunk_lists,
    split_into_chunks,
)
from limner.prompts.parser import parse_prompt_attention

CHUNK_LENGTH = 75  # real tokens per chunk; +BOS +EOS = 77, CLIP's context


@dataclass
class Conditioning:
    """What the UNet is conditioned on for one prompt."""

    embeds: torch.Tensor  # (1, 77 * n_chunks, D)
    pooled: torch.Tensor | None = None  # (1, P): SDXL's pooled text embedding


class TokenEncoder:
    """One tokenizer + transformer text encoder, used chunk by chunk.

    `layer`: "last" takes the final hidden state (SD 1.x/2.x: after the final layer
    norm); "penultimate" takes the one before the last block without the final norm
    (SDXL). A1111's clip skip N>1 takes hidden state -N followed by the final layer norm.
    """

    def __init__(
        self,
        tokenizer,
        text_encoder: torch.nn.Module,
        *,
        layer: Literal["last", "penultimate"] = "last",
        pooled: bool = False,
        attention_mask: bool = False,
    ) -> None:
        self.tokenizer = tokenizer
        self.text_encoder = text_encoder
        self.layer = layer
        self.pooled = pooled
        self.attention_mask = attention_mask
        self.bos_id = (
            tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.cls_token_id
        )
        self.eos_id = (
            tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
        )
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_id
        comma = tokenizer(",", add_special_tokens=False).input_ids
        self.comma_id = comma[0] if len(comma) == 1 else None

    def tokenize(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False, truncation=False).input_ids

    def chunks(self, prompt: str) -> list[TokenChunk]:
        return split_into_chunks(
            parse_prompt_attention(prompt), self.tokenize, self.comma_id, chunk_length=CHUNK_LENGTH
        )

    def _final_norm(self) -> torch.nn.Module | None:
        model = self.text_encoder
        model = getattr(model, "text_model", model)
        return getattr(model, "final_layer_norm", None)

    @torch.no_grad()
    def encode(self, chunks: list[TokenChunk], clip_skip: int = 1) -> Conditioning:
        padded = [pad_chunk(c, self.bos_id, self.eos_id, self.pad_id, CHUNK_LENGTH) for c in chunks]
        device = self.text_encoder.device
        ids = torch.tensor([p[0] for p in padded], device=device)  # (n_chunks, 77)
        weights = torch.tensor([p[1] for p in padded], device=device)  # (n_chunks, 77)
        mask = None
        if self.attention_mask:
            mask = _attention_mask(ids, self.eos_id, self.pad_id)
        out = self.text_encoder(ids, attention_mask=mask, output_hidden_states=True)
        if self.layer == "penultimate":
            hidden = out.hidden_states[-1 - clip_skip]
        elif clip_skip > 1:
            hidden = out.hidden_states[-clip_skip]
            norm = self._final_norm()
            if norm is not None:
                hidden = norm(hidden)
        else:
            hidden = out.last_hidden_state
        # A1111 rescales each chunk to its own original mean (it encodes chunk by chunk).
        hidden = torch.cat(
            [apply_emphasis(hidden[i : i + 1], weights[i : i + 1]) for i in range(len(chunks))]
        )
        embeds = hidden.reshape(1, -1, hidden.shape[-1])  # chunks side by side: (1, 77n, D)
        pooled = None
        if self.pooled:
            # A1111 and SAI take the pooled embedding of the first chunk only.
            pooled = out.text_embeds[:1] if hasattr(out, "text_embeds") else out.pooler_output[:1]
        return Conditioning(embeds, pooled)


def _attention_mask(ids: torch.Tensor, eos_id: int, pad_id: int) -> torch.Tensor:
    """1 up to and including the first EOS/SEP of each chunk, 0 on the padding after it."""
    is_end = ids == eos_id
    first_end = torch.where(
        is_end.any(1), is_end.float().argmax(1), torch.full_like(ids[:, 0], ids.shape[1] - 1)
    )
    positions = torch.arange(ids.shape[1], device=ids.device)
    return (positions[None, :] <= first_end[:, None]).long()


class PromptEncoder:
    """The conditioning of a latent diffusion model: one or more `TokenEncoder`s.

    With two encoders (SDXL) their hidden states are concatenated along the feature
    axis and the pooled embedding comes from the last one.
    """

    def __init__(self, encoders: list[TokenEncoder]) -> None:
        self.encoders = encoders

    def encode_pair(
        self, prompt: str, negative_prompt: str, clip_skip: int = 1
    ) -> tuple[Conditioning, Conditioning]:
        """Encode a prompt and its negative with the same number of chunks (A1111 pads
        the shorter with empty chunks so that both batches have one shape)."""
        positives, negatives = [], []
        for encoder in self.encoders:
            pos_chunks, neg_chunks = pad_chunk_lists(
                encoder.chunks(prompt), encoder.chunks(negative_prompt)
            )
            positives.append(encoder.encode(pos_chunks, clip_skip))
            negatives.append(encoder.encode(neg_chunks, clip_skip))
        return _combine(positives), _combine(negatives)

    def encode(self, prompt: str, clip_skip: int = 1) -> Conditioning:
        return _combine([e.encode(e.chunks(prompt), clip_skip) for e in self.encoders])

    @property
    def device(self) -> torch.device:
        return self.encoders[0].text_encoder.device


def _combine(parts: list[Conditioning]) -> Conditioning:
    if len(parts) == 1:
        return parts[0]
    embeds = torch.cat([p.embeds for p in parts], dim=-1)
    return Conditioning(embeds, parts[-1].pooled)
