"""A tiny model split over two devices with accelerate's hooks, as ``device_map`` does for a large one.

With a GPU the split is real (vision tower, embeddings and the first half of the decoder on ``cuda:0``, the
rest on the CPU); on a CPU-only machine both halves are on the CPU but accelerate's device hooks are forced on,
so the engine's hooks run under them. The boundary sits after decoder layer 3.
"""

from __future__ import annotations

import torch

DEVICES = ("cuda:0", "cpu") if torch.cuda.is_available() else ("cpu", "cpu")
BOUNDARY = 3


def split_device_map(family: str, layers: int = 6) -> dict[str, str]:
    """Every submodule of a tiny ``family`` model mapped to the first or the second device."""
    first, second = DEVICES
    if family == "qwen2.5-vl":
        vision = {"model.visual": first}
    else:
        vision = {"model.vision_tower": first, "model.multi_modal_projector": first}
        if family == "llava-next":
            vision["model.image_newline"] = first
    decoder = {f"model.language_model.layers.{i}": (first if i < BOUNDARY else second) for i in range(layers)}
    rest = {
        "model.language_model.embed_tokens": first,
        "model.language_model.norm": second,
        "model.language_model.rotary_emb": second,
        "lm_head": second,
    }
    return {**vision, **decoder, **rest}


def dispatch_split(model, family: str):
    """``model`` spread by :func:`split_device_map` with accelerate's hooks (forced on a CPU-only machine)."""
    import accelerate

    device_map = split_device_map(family, model.config.get_text_config().num_hidden_layers)
    if DEVICES[0] != DEVICES[1]:
        return accelerate.dispatch_model(model, device_map=device_map)
    return accelerate.dispatch_model(model, device_map=device_map, main_device="cpu", force_hooks=True)


def load_split(from_pretrained, path, family: str, **kwargs):
    """``from_pretrained(path, **kwargs)`` (a model class's) spread by :func:`split_device_map`: loaded straight
    onto both devices where there is a GPU, else loaded whole and dispatched with forced hooks."""
    if DEVICES[0] != DEVICES[1]:
        return from_pretrained(path, device_map=split_device_map(family), **kwargs)
    return dispatch_split(from_pretrained(path, **kwargs), family)
