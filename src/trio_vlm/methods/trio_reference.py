"""TRIO as the authors' published code runs it on Qwen2.5-VL and LLaVA-NeXT (``TRIO(reference_quirks=True)``).

The paper's algorithm is TRIO's default on every family. Where the authors' code (ocy1/TRIO) departs from it,
these pieces reproduce what that code selects (docs/families.md, "TRIO: paper, authors' code, trio-vlm"):

* Qwen2.5-VL, ``qwen/model/qwen2_5_vl_custom.py::Qwen2_5_VLModel_X.layer_prune``: the probe runs decoder layer
  L-1 (the layer that just ran) instead of L, and ``_get_output_head`` finds no ``lm_head`` on the text model, so
  it scores with the input embedding matrix as a tied head (:func:`probe_setup`). ``Qwen2_5_VLModel_X.forward``
  rebuilds ``cache_position`` from the cache length after a drop, so the later prefill layers see every token
  (non-causal; ``TRIO.causal_after_drop``).
* LLaVA-NeXT, ``llava/model/llava_arch.py::encode_images`` and ``prepare_inputs_labels_for_multimodal_x``:
  the encoder stage keeps ``visual_token_num`` tokens per tile, chosen and merged on the tile's whole patch grid
  *before* unpadding, which then cuts some of them (:func:`tile_selection`).
  ``llava/model/modeling_llama_x.py::LlamaModel_X.layer_prune``: an LLM stage prunes only the first
  ``min(k, n)`` image tokens, ``k`` the count entering the stage — the base tile; crop tokens and row newlines
  pass untouched (:func:`base_span`).
"""

from __future__ import annotations

from typing import Any

import torch

from trio_vlm.contract import Group
from trio_vlm.methods.window_global import merge_into_nearest, window_global_select
from trio_vlm.schedule import Schedule

QWEN, NEXT = "qwen2.5-vl", "llava-next"
#: Families whose reference code departs from the paper (LLaVA-1.5's follows it).
FAMILIES = (QWEN, NEXT)


def probe_setup(adapter: Any, layer_index: int) -> tuple[int, torch.nn.Module]:
    """(decoder layer the probe runs, output head) of the Qwen2.5-VL reference: the layer before the drop
    (``_loss_on_current_layer``: ``start_layer_1based - 1``) and ``embed_tokens`` as a tied head."""
    return layer_index - 1, adapter.input_embeddings


def tile_selection(
    g: Group,
    shallow: torch.Tensor,
    deep: torch.Tensor,
    projected: torch.Tensor | None,
    schedule: Schedule,
    window: int,
    local_ratio: float,
    merge: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(kept local indices, their merged features) of one LLaVA-NeXT tile, the reference way.

    ``shallow``/``deep`` are the tile's [CLS] rows and ``projected`` its projected features over the whole
    patch grid; the tile keeps the encoder budget of a whole tile on that grid (LLaVA-1.5's window/global
    rule), every dropped patch is merged into its nearest kept patch, and only then are the patches that
    unpadding cut (absent from ``g``) removed — with what was merged into them.
    """
    if g.patch is None:
        raise ValueError("the reference LLaVA-NeXT encoder stage needs each token's patch index")
    chosen = window_global_select(shallow, deep, schedule.encoder_keep(shallow.numel()), window, local_ratio)
    kept = torch.isin(g.patch, chosen).nonzero().flatten()
    if not merge:
        return kept, None
    if projected is None:
        raise ValueError("the reference LLaVA-NeXT encoder stage needs the projected tile features")
    merged = merge_into_nearest(projected, chosen)
    return kept, merged[torch.searchsorted(chosen, g.patch[kept])]


def base_span(g: Group, schedule: Schedule, stage: int) -> int:
    """How many of the image's first tokens a LLaVA-NeXT LLM stage of the reference treats as the image:
    ``min(k, n)`` with ``k`` the count entering the stage (``image_token_list`` with ``visual_token_num``
    in front; 576 = the base tile without an encoder stage). Given as fractions, ``k`` is the base tile's
    surviving tokens."""
    counts = schedule.image_token_list
    if counts and stage > 0:
        entering = counts[stage - 1]
    elif counts and schedule.visual_token_num is not None:
        entering = schedule.visual_token_num
    elif g.tile is not None:
        entering = int((g.tile == 0).sum())
    else:
        entering = g.size
    return min(entering, g.size)
