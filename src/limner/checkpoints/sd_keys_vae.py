"""VAE key names: diffusers ``AutoencoderKL`` -> original ``AutoencoderKL`` (first stage model).

Original layout (CompVis/stable-diffusion ``ldm/modules/diffusionmodules/model.py``,
``Encoder``/``Decoder``):

* ``encoder.down.I.block.J`` ResNet blocks and ``encoder.down.I.downsample.conv`` for every
  level but the last;
* ``decoder.up.I.block.J`` and ``decoder.up.I.upsample.conv`` where ``I`` counts from the
  *lowest* resolution upwards, i.e. in the reverse order of diffusers' ``decoder.up_blocks``;
* ``{encoder,decoder}.mid.block_1``, ``mid.attn_1``, ``mid.block_2``;
* ``norm_out`` / ``conv_out`` / ``conv_in``, and ``quant_conv`` / ``post_quant_conv``.

ResNet children keep their names except ``nin_shortcut`` (diffusers ``conv_shortcut``). The
mid attention uses 1x1 convolutions ``q``/``k``/``v``/``proj_out`` and a ``norm``, where
diffusers has linear ``to_q``/``to_k``/``to_v``/``to_out.0`` and ``group_norm``: the weights
differ only by the two trailing singleton dimensions (op ``conv1x1``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from .sd_keys_unet import ModuleRule, rename_with_rules

VAE_RESNET_LEAVES: tuple[tuple[str, str], ...] = (("conv_shortcut", "nin_shortcut"),)
VAE_ATTENTION_LEAVES: tuple[tuple[str, str], ...] = (
    ("group_norm", "norm"),
    ("to_q", "q"),
    ("to_k", "k"),
    ("to_v", "v"),
    ("to_out.0", "proj_out"),
)
_CONV1X1_LEAVES = ("to_q.weight", "to_k.weight", "to_v.weight", "to_out.0.weight")


def vae_module_map(config: Mapping) -> list[ModuleRule]:
    """(diffusers module prefix, original module prefix, child renames), from the config."""
    levels = len(config["block_out_channels"])
    rules: list[ModuleRule] = [
        ("quant_conv.", "quant_conv.", ()),
        ("post_quant_conv.", "post_quant_conv.", ()),
    ]
    for side in ("encoder", "decoder"):
        rules += [
            (f"{side}.conv_in.", f"{side}.conv_in.", ()),
            (f"{side}.conv_norm_out.", f"{side}.norm_out.", ()),
            (f"{side}.conv_out.", f"{side}.conv_out.", ()),
            (f"{side}.mid_block.resnets.0.", f"{side}.mid.block_1.", VAE_RESNET_LEAVES),
            (f"{side}.mid_block.resnets.1.", f"{side}.mid.block_2.", VAE_RESNET_LEAVES),
            (f"{side}.mid_block.attentions.0.", f"{side}.mid.attn_1.", VAE_ATTENTION_LEAVES),
        ]
    for level in range(levels):
        rules.append((f"encoder.down_blocks.{level}.resnets.", f"encoder.down.{level}.block.", ()))
        rules.append(
            (
                f"encoder.down_blocks.{level}.downsamplers.0.conv.",
                f"encoder.down.{level}.downsample.conv.",
                (),
            )
        )
        original_level = levels - 1 - level  # the decoder is stored bottom-up
        rules.append(
            (f"decoder.up_blocks.{level}.resnets.", f"decoder.up.{original_level}.block.", ())
        )
        rules.append(
            (
                f"decoder.up_blocks.{level}.upsamplers.0.conv.",
                f"decoder.up.{original_level}.upsample.conv.",
                (),
            )
        )
    return rules


def _rename_shortcut(name: str) -> str:
    # ".block.J.conv_shortcut." -> ".block.J.nin_shortcut."; J varies, so not a prefix rule.
    return name.replace(".conv_shortcut.", ".nin_shortcut.")


def make_vae_rule(config: Mapping) -> Callable[[str], tuple[str, str]]:
    """A ``diffusers key -> (original key without prefix, op)`` function for one VAE config."""
    rules = vae_module_map(config)

    def rule(key: str) -> tuple[str, str]:
        name = _rename_shortcut(rename_with_rules(key, rules, "vae"))
        op = (
            "conv1x1"
            if ".mid_block.attentions." in key and key.endswith(_CONV1X1_LEAVES)
            else "copy"
        )
        return name, op

    return rule


def vae_key_to_original(key: str, config: Mapping) -> tuple[str, str]:
    """Original name (without ``first_stage_model.``) and op of one diffusers VAE key."""
    return make_vae_rule(config)(key)
