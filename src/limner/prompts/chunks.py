"""AUTOMATIC1111-compatible long prompts: 75-token chunks, BREAK, comma backtrack, emphasis.

Reproduces the behaviour of A1111's ``modules/sd_hijack_clip.py`` (``tokenize_line``,
``process_tokens``) and ``modules/sd_emphasis.py`` ("Original" emphasis), without textual
inversion embeddings. The implementation is our own.

A prompt is cut into chunks of at most 75 real tokens; each chunk is wrapped as
``[bos] + ids + [eos] + [pad]...`` (77 tokens), encoded on its own, weighted, and the chunk
encodings are concatenated along the token axis.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from limner.prompts.parser import BREAK_TEXT, BREAK_WEIGHT

CHUNK_LENGTH = 75
COMMA_BACKTRACK = 20  # A1111's default "comma_padding_backtrack" (0 disables it)


@dataclass
class TokenChunk:
    """The real tokens of one chunk and their weights, without BOS/EOS/padding."""

    ids: list[int] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)


def split_into_chunks(
    fragments: list[tuple[str, float]],
    tokenize: Callable[[str], list[int]],
    comma_id: int | None,
    chunk_length: int = CHUNK_LENGTH,
    comma_backtrack: int = COMMA_BACKTRACK,
) -> list[TokenChunk]:
    """Cut weighted fragments (from `parse_prompt_attention`) into chunks as A1111 does.

    ``tokenize`` must return the ids of one fragment *without* special tokens; each
    fragment is tokenized on its own, as A1111 does, so BPE never merges across a weight
    boundary. The rules, in A1111's order:

    * A fragment ``("BREAK", -1.0)`` closes the current chunk even if it is empty, so a
      leading ``BREAK`` gives an empty first chunk. A chunk that is full is only closed
      when the next token arrives, so ``BREAK`` right after exactly 75 tokens does not
      add an empty chunk, nor does a trailing ``BREAK``.
    * When a non-comma token arrives at a full chunk and the last comma in that chunk is
      within ``comma_backtrack`` tokens of its end, the tokens after the comma move to the
      next chunk (the comma stays). A comma that arrives at a full chunk is not
      remembered: it starts the next chunk, and every new chunk forgets earlier commas.
    * At the end the last chunk is kept if it has tokens, and an empty prompt gives one
      empty chunk.
    """
    if chunk_length < 1:
        raise ValueError(f"chunk_length must be at least 1, got {chunk_length}")
    chunks: list[TokenChunk] = []
    current = TokenChunk()
    last_comma = -1  # index of the last comma in `current`, -1 if none

    def close_chunk() -> None:
        nonlocal current, last_comma
        chunks.append(current)
        current = TokenChunk()
        last_comma = -1

    for text, weight in fragments:
        if text == BREAK_TEXT and weight == BREAK_WEIGHT:
            close_chunk()
            continue
        for token in tokenize(text):
            full = len(current.ids) == chunk_length
            if comma_id is not None and token == comma_id:
                last_comma = len(current.ids)
            # A comma is always at an index < chunk_length, so a limit of 0 never fires:
            # that is how A1111's "0 disables it" works out.
            elif full and last_comma != -1 and chunk_length - last_comma <= comma_backtrack:
                cut = last_comma + 1
                moved = TokenChunk(current.ids[cut:], current.weights[cut:])
                del current.ids[cut:], current.weights[cut:]
                close_chunk()
                current = moved
            if len(current.ids) == chunk_length:
                close_chunk()
            current.ids.append(token)
            current.weights.append(weight)

    if current.ids or not chunks:
        close_chunk()
    return chunks


def pad_chunk(
    chunk: TokenChunk,
    bos_id: int,
    eos_id: int,
    pad_id: int,
    chunk_length: int = CHUNK_LENGTH,
) -> tuple[list[int], list[float]]:
    """Wrap a chunk as ``[bos] + ids + [eos] + [pad] * n`` of length ``chunk_length + 2``.

    Special and padding tokens get weight 1.0. A1111 builds ``[bos] + ids + [eos]*n`` and,
    when the pad token differs from EOS (SD2/SDXL OpenCLIP), overwrites everything after
    the first EOS with the pad token, which is this layout. Passing the tokenizer's own pad
    id makes an unweighted short prompt identical to
    ``tokenizer(text, padding="max_length", max_length=77)``.
    """
    if len(chunk.ids) != len(chunk.weights):
        raise ValueError(f"chunk has {len(chunk.ids)} ids but {len(chunk.weights)} weights")
    if len(chunk.ids) > chunk_length:
        raise ValueError(f"chunk has {len(chunk.ids)} tokens, more than {chunk_length}")
    n_pad = chunk_length - len(chunk.ids)
    ids = [bos_id, *chunk.ids, eos_id] + [pad_id] * n_pad
    weights = [1.0, *(float(w) for w in chunk.weights), 1.0] + [1.0] * n_pad
    return ids, weights


def apply_emphasis(z: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """A1111's "Original" emphasis: scale each token's embedding, then restore the mean.

    ``z`` is the text encoder output for one chunk position, shape (B, T, D); ``weights``
    is (B, T). As in A1111 the mean is taken over the *whole* tensor, not per batch item,
    so callers wanting A1111's numbers must pass what A1111 encodes together: one chunk
    position of one prompt (its prompt-editing variants form the batch); positive and
    negative prompts are encoded separately.

    Arithmetic follows A1111: the original mean is taken in ``z``'s dtype, the weights are
    float32 (so a half-precision ``z`` is weighted in float32). The result is cast back to
    ``z``'s dtype. Where the weighted mean is exactly 0 A1111 would divide by zero and
    produce inf/NaN; we skip the rescale there instead. All-ones weights return ``z``
    itself, bit for bit.
    """
    if z.ndim != 3 or weights.shape != z.shape[:2]:
        raise ValueError(
            f"expected z of shape (B, T, D) and weights (B, T), got {tuple(z.shape)} "
            f"and {tuple(weights.shape)}"
        )
    weights = weights.to(device=z.device, dtype=torch.float32)
    if bool((weights == 1.0).all()):
        return z
    original_mean = z.mean()
    weighted = z * weights.unsqueeze(-1)
    new_mean = weighted.mean()
    ratio = original_mean / new_mean
    ratio = torch.where(new_mean == 0, torch.ones_like(ratio), ratio)
    return (weighted * ratio).to(z.dtype)


def pad_chunk_lists(
    a: list[TokenChunk], b: list[TokenChunk]
) -> tuple[list[TokenChunk], list[TokenChunk]]:
    """Give a positive and a negative prompt the same number of chunks.

    The shorter list is extended with empty chunks; an empty chunk encodes exactly like
    the empty prompt, which is what A1111 appends ("Pad prompt/negative prompt" option,
    ``pad_cond_uncond``). New lists are returned; the inputs are not modified.
    """
    count = max(len(a), len(b))
    padded_a = list(a) + [TokenChunk() for _ in range(count - len(a))]
    padded_b = list(b) + [TokenChunk() for _ in range(count - len(b))]
    return padded_a, padded_b
