"""Text encoder key names: transformers ``CLIPTextModel[WithProjection]`` -> original.

SD 1.x and SDXL's first tower store the Hugging Face CLIP text model as is, under
``...transformer.text_model.`` (the LDM ``FrozenCLIPEmbedder`` wraps ``CLIPTextModel`` and
saves it as ``transformer``). transformers 5 dropped the ``text_model.`` level from
``CLIPTextModel.state_dict()``, so the rule is the identity on the remaining key.

SD 2.x and SDXL's second tower (``FrozenOpenCLIPEmbedder[2]``) store an open_clip text
transformer (mlfoundations/open_clip ``model.py`` / ``transformer.py``):

=============================================  ==============================================
transformers                                   open_clip
=============================================  ==============================================
``embeddings.token_embedding.weight``           ``token_embedding.weight``
``embeddings.position_embedding.weight``        ``positional_embedding`` (a bare parameter)
``encoder.layers.N.self_attn.{q,k,v}_proj``     ``transformer.resblocks.N.attn.in_proj_{weight,bias}``
                                                (``nn.MultiheadAttention`` packs q, k, v on dim 0)
``encoder.layers.N.self_attn.out_proj``         ``transformer.resblocks.N.attn.out_proj``
``encoder.layers.N.layer_norm{1,2}``            ``transformer.resblocks.N.ln_{1,2}``
``encoder.layers.N.mlp.fc{1,2}``                ``transformer.resblocks.N.mlp.c_{fc,proj}``
``final_layer_norm``                            ``ln_final``
``text_projection.weight`` (Linear, out x in)  ``text_projection`` (in x out, used as ``x @ P``)
=============================================  ==============================================
"""

from __future__ import annotations

import re

_LAYER = re.compile(r"^encoder\.layers\.(\d+)\.(.+)$")
_LAYER_CHILDREN: tuple[tuple[str, str], ...] = (
    ("self_attn.out_proj.", "attn.out_proj."),
    ("layer_norm1.", "ln_1."),
    ("layer_norm2.", "ln_2."),
    ("mlp.fc1.", "mlp.c_fc."),
    ("mlp.fc2.", "mlp.c_proj."),
)
_TOP_LEVEL: dict[str, tuple[str, str]] = {
    "embeddings.token_embedding.weight": ("token_embedding.weight", "copy"),
    "embeddings.position_embedding.weight": ("positional_embedding", "copy"),
    "final_layer_norm.weight": ("ln_final.weight", "copy"),
    "final_layer_norm.bias": ("ln_final.bias", "copy"),
    "text_projection.weight": ("text_projection", "transpose"),
}


def _strip_text_model(key: str) -> str:
    # CLIPTextModelWithProjection (and transformers 4's CLIPTextModel) nest the tower as
    # ``text_model.``; transformers 5's CLIPTextModel does not.
    return key[len("text_model.") :] if key.startswith("text_model.") else key


def clip_text_key_to_original(key: str) -> tuple[str, str]:
    """HF CLIP text model key -> key under ``...transformer.text_model.`` (identity)."""
    return _strip_text_model(key), "copy"


def open_clip_key_to_original(key: str) -> tuple[str, str]:
    """HF CLIP text model key -> open_clip text transformer key and op."""
    key = _strip_text_model(key)
    if key in _TOP_LEVEL:
        return _TOP_LEVEL[key]
    match = _LAYER.match(key)
    if match is None:
        raise ValueError(f"open_clip: no original-layout name known for {key!r}")
    layer, rest = match.groups()
    block = f"transformer.resblocks.{layer}."
    projection = re.fullmatch(r"self_attn\.[qkv]_proj\.(weight|bias)", rest)
    if projection:
        return f"{block}attn.in_proj_{projection.group(1)}", "qkv"
    for old, new in _LAYER_CHILDREN:
        if rest.startswith(old):
            return block + new + rest[len(old) :], "copy"
    raise ValueError(f"open_clip: no original-layout name known for {key!r}")
