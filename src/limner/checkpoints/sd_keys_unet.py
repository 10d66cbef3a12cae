"""UNet key names: diffusers ``UNet2DConditionModel`` -> original ``openaimodel.UNetModel``.

The original UNet (CompVis/stable-diffusion and Stability-AI/generative-models,
``ldm/modules/diffusionmodules/openaimodel.py``) is a flat list of sequential blocks:

* ``input_blocks.0.0`` is the first convolution; then every down level contributes one
  ``input_blocks.N`` per ResNet layer (``.0`` the ResBlock, ``.1`` its SpatialTransformer when
  the level has attention) and, except the last level, one ``input_blocks.N.0.op`` downsampler;
* ``middle_block.{0,1,2}`` = ResBlock, SpatialTransformer, ResBlock;
* ``output_blocks.N`` mirror the down path with one more ResBlock per level; the upsampler
  sits after the last ResBlock of a level, at ``.1`` (no attention) or ``.2``;
* ``time_embed.{0,2}``, SDXL's ``label_emb.0.{0,2}`` (the size/crop embedding that diffusers
  calls ``add_embedding``) and ``out.{0,2}`` (norm, conv).

Inside a ResBlock the original names are Sequential indices (``in_layers.0`` norm,
``in_layers.2`` conv, ``emb_layers.1`` linear, ``out_layers.0`` norm, ``out_layers.3`` conv,
``skip_connection``). Inside a SpatialTransformer both layouts use the same names
(``norm``, ``proj_in``, ``transformer_blocks.T.attn1.to_q``, ``ff.net.0.proj``, ...), and
``proj_in``/``proj_out`` even have the same shapes: 1x1 convolutions when
``use_linear_projection`` is false (SD 1.x), linear layers when it is true (SD 2.x, SDXL).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

# diffusers ResnetBlock2D child -> original ResBlock child.
RESNET_LEAVES: tuple[tuple[str, str], ...] = (
    ("norm1", "in_layers.0"),
    ("conv1", "in_layers.2"),
    ("time_emb_proj", "emb_layers.1"),
    ("norm2", "out_layers.0"),
    ("conv2", "out_layers.3"),
    ("conv_shortcut", "skip_connection"),
)

ModuleRule = tuple[str, str, tuple[tuple[str, str], ...]]


def _per_level(value: int | Sequence[int], levels: int) -> list[int]:
    return [int(value)] * levels if isinstance(value, int) else [int(v) for v in value]


def unet_module_map(config: Mapping) -> list[ModuleRule]:
    """(diffusers module prefix, original module prefix, child renames), from the config."""
    down_types = list(config["down_block_types"])
    up_types = list(config["up_block_types"])
    levels = len(down_types)
    layers = _per_level(config["layers_per_block"], levels)
    rules: list[ModuleRule] = [
        ("conv_in.", "input_blocks.0.0.", ()),
        ("time_embedding.linear_1.", "time_embed.0.", ()),
        ("time_embedding.linear_2.", "time_embed.2.", ()),
        ("add_embedding.linear_1.", "label_emb.0.0.", ()),
        ("add_embedding.linear_2.", "label_emb.0.2.", ()),
        ("conv_norm_out.", "out.0.", ()),
        ("conv_out.", "out.2.", ()),
        ("mid_block.resnets.0.", "middle_block.0.", RESNET_LEAVES),
        ("mid_block.attentions.0.", "middle_block.1.", ()),
        ("mid_block.resnets.1.", "middle_block.2.", RESNET_LEAVES),
    ]
    index = 1
    for level, block_type in enumerate(down_types):
        for layer in range(layers[level]):
            rules.append(
                (f"down_blocks.{level}.resnets.{layer}.", f"input_blocks.{index}.0.", RESNET_LEAVES)
            )
            if "CrossAttn" in block_type:
                rules.append(
                    (f"down_blocks.{level}.attentions.{layer}.", f"input_blocks.{index}.1.", ())
                )
            index += 1
        if level < levels - 1:  # diffusers adds a downsampler to every level but the last
            rules.append(
                (f"down_blocks.{level}.downsamplers.0.conv.", f"input_blocks.{index}.0.op.", ())
            )
            index += 1
    up_layers = list(reversed(layers))
    index = 0
    for level, block_type in enumerate(up_types):
        has_attention = "CrossAttn" in block_type
        for layer in range(up_layers[level] + 1):
            rules.append(
                (f"up_blocks.{level}.resnets.{layer}.", f"output_blocks.{index}.0.", RESNET_LEAVES)
            )
            if has_attention:
                rules.append(
                    (f"up_blocks.{level}.attentions.{layer}.", f"output_blocks.{index}.1.", ())
                )
            index += 1
        if level < levels - 1:
            slot = 2 if has_attention else 1
            rules.append(
                (
                    f"up_blocks.{level}.upsamplers.0.conv.",
                    f"output_blocks.{index - 1}.{slot}.conv.",
                    (),
                )
            )
    return rules


def rename_with_rules(key: str, rules: Sequence[ModuleRule], what: str) -> str:
    """Rename ``key`` by the longest matching module prefix, then its child renames."""
    best: ModuleRule | None = None
    for rule in rules:
        if key.startswith(rule[0]) and (best is None or len(rule[0]) > len(best[0])):
            best = rule
    if best is None:
        raise ValueError(f"{what}: no original-layout name known for {key!r}")
    prefix, original, leaves = best
    rest = key[len(prefix) :]
    for old, new in leaves:
        if rest.startswith(old + "."):
            rest = new + rest[len(old) :]
            break
    return original + rest


def make_unet_rule(config: Mapping) -> Callable[[str], str]:
    """A ``diffusers key -> original key (without prefix)`` function for one UNet config."""
    rules = unet_module_map(config)
    return lambda key: rename_with_rules(key, rules, "unet")


def unet_key_to_original(key: str, config: Mapping) -> str:
    """Original name (without ``model.diffusion_model.``) of one diffusers UNet key."""
    return rename_with_rules(key, unet_module_map(config), "unet")
