"""Put a loaded latent diffusion model on the fast path that `resolve_runtime` chose.

- dtype: the whole bundle in bf16 where that is faster than fp32 (weights are loaded in that
  dtype directly, see `limner.api.load`); the VAE falls back to fp32 by itself when a
  decode is not finite (`limner.pipelines.steps.decode_latents`).
- weight storage: with `Runtime.fp16_weights`, an fp32 run keeps its weights in fp16
  (loaded so) and each layer gets fp32 copies only while it runs (diffusers' layerwise
  casting hooks): the memory of 16-bit weights with fp32 numerics; large blocks are then
  served from mmap, so the copies' churn does not fragment the heap.
- memory layout: channels-last for the UNet and VAE, the layout oneDNN's convolutions
  run fastest in (NCHW inputs would be reordered at every convolution).
- attention: PyTorch's `scaled_dot_product_attention` (diffusers' `AttnProcessor2_0`),
  fused and blocked on CPU, set explicitly so a model loaded with another processor
  gets it too.
- threads: one per physical core.
- torch.compile (inductor) of the UNet, on request.
"""

from __future__ import annotations

import torch
from diffusers.models.attention_processor import AttnProcessor2_0

from limner.models.latent import LatentDiffusionModel
from limner.runtime.deepcache import install_capture
from limner.runtime.device import Runtime, apply_threads
from limner.runtime.memory import return_large_blocks_to_the_system


def prepare_model(model: LatentDiffusionModel, runtime: Runtime) -> LatentDiffusionModel:
    """Apply `runtime` to `model` in place (dtype, layout, attention, threads, compile)."""
    apply_threads(runtime.threads)
    if runtime.fp16_weights:
        return_large_blocks_to_the_system()
    for module in _modules(model):
        if runtime.fp16_weights:
            store_in_fp16(module, compute=runtime.dtype)
        elif _dtype_of(module) != runtime.dtype:
            module.to(runtime.dtype)
    for module in (model.unet, model.vae):
        module.to(
            memory_format=torch.channels_last
            if runtime.options.channels_last
            else torch.contiguous_format
        )
        module.set_attn_processor(AttnProcessor2_0())
    if runtime.options.compile:
        model.unet = compile_unet(model.unet)
    return model


def store_in_fp16(module: torch.nn.Module, compute: torch.dtype) -> None:
    """Keep the weights of `module`'s convolutions, linear layers and embeddings in fp16,
    cast to `compute` around each of their calls; the other parameters and float buffers
    (normalisations: a small share of the bytes, and where rounding matters most) are
    kept in `compute`. The module's own `.dtype`, for diffusers models, stays `compute`.

    Cast layer by layer, so that a model loaded in fp16 is never whole in fp32."""
    from diffusers.hooks import apply_layerwise_casting
    from diffusers.hooks.hooks import HookRegistry

    apply_layerwise_casting(
        module, storage_dtype=torch.float16, compute_dtype=compute, skip_modules_pattern=("norm",)
    )
    for layer in module.modules():
        registry = getattr(layer, "_diffusers_hook", None)
        if isinstance(registry, HookRegistry) and registry.get_hook("layerwise_casting"):
            continue
        for tensor in [*layer._parameters.values(), *layer._buffers.values()]:
            if tensor is not None and tensor.is_floating_point() and tensor.dtype != compute:
                tensor.data = tensor.data.to(compute)


def stores_fp16_weights(module: torch.nn.Module) -> bool:
    """Whether `store_in_fp16` was applied to `module`."""
    return any(
        getattr(layer, "_diffusers_hook", None) is not None
        and layer._diffusers_hook.get_hook("layerwise_casting") is not None
        for layer in module.modules()
    )


def compile_unet(unet: torch.nn.Module) -> torch.nn.Module:
    """torch.compile the UNet (inductor). The first call of each shape compiles (minutes
    for SD on a small CPU); later calls reuse the code.

    - freezing: under no_grad (how limner samples) the weights become constants of the
      graph, so oneDNN gets them prepacked once and the convolutions and linear layers
      carry their bias and activation fused; the module's own parameters stay, for
      DeepCache's shallow steps, which run the UNet's submodules eagerly. DeepCache's
      full steps run compiled: its capture of the deep features is installed first. Weights
      changed after the first call (a LoRA fused in, say) are not seen by the compiled
      graph: load and compile the model again instead.
    - max_autotune: each matrix product is timed against inductor's own AMX/AVX-512
      GEMM kernels and the fastest kept. On SD 1.5 at 512x512 on a 2-core AMX Xeon
      (bf16, batch 2) an eager step took 1.96 s, frozen 1.59 s, frozen and autotuned
      1.55 s (2026-12-04; the attention, 0.61 s of it, is the same fused kernel in all).
    """
    if getattr(unet, "_orig_mod", None) is not None:  # already compiled
        return unet
    import torch._inductor.config as inductor_config

    if hasattr(unet, "up_blocks"):
        install_capture(unet)  # before the first trace, so that every graph keeps it

    # Read when a graph is compiled (at its first call), outside torch.compile's
    # `options`, which do not reach it: set for the process.
    inductor_config.freezing = True
    return torch.compile(unet, dynamic=False, options={"max_autotune": True})


def _modules(model: LatentDiffusionModel) -> list[torch.nn.Module]:
    encoders = [e.text_encoder for e in model.prompt_encoder.encoders]
    return [model.unet, model.vae, *encoders]


def _dtype_of(module: torch.nn.Module) -> torch.dtype | None:
    for parameter in module.parameters():
        return parameter.dtype
    return None
