"""Model-family adapters: everything the engine and methods need to know about a model's internals.

All code that depends on transformers' internal layout or keyword names lives in adapters, one module per
family; methods and the engine only talk to this interface.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from trio_vlm.adapters import llama_attention
from trio_vlm.contract import VisualItem


class ModelAdapter:
    """Interface + shared helpers for Llama-style decoder stacks (Llama, Qwen2 and relatives)."""

    family: str = "base"
    #: Position convention the family's reference implementation uses after a drop.
    default_position_mode: str = "compact"
    #: Whether the encoder stage prunes each tile of an image on its own (LLaVA-NeXT: per crop).
    split_tiles_at_encoder: bool = False
    #: Leading entries of a vision-layer input row that are not patches (CLIP's [CLS]).
    vision_row_prefix: int = 1

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    # ---- per-call capture (family-specific inputs the layout needs) ----------------------------------
    def install_hooks(self) -> list[Any]:
        """Extra capture hooks of the family (removable handles); none by default."""
        return []

    def begin_prefill(self, kwargs: dict[str, Any]) -> None:
        """The multimodal forward's keyword arguments of a new prefill."""

    def end_prefill(self) -> None:
        """Forget what was captured for the prefill that just ended."""

    def on_vision_tower(self, args: tuple, kwargs: dict[str, Any]) -> None:
        """The vision tower is about to run with these arguments."""

    def check_supported(self, method: Any) -> None:
        """``ValueError`` if ``method`` needs something this family cannot provide."""

    # ---- modules -------------------------------------------------------------------------------------
    @property
    def multimodal_model(self) -> nn.Module:
        """The module whose forward receives ``input_ids`` / ``inputs_embeds`` and runs the vision tower
        (``model.model`` in every supported ``*ForConditionalGeneration``)."""
        return self.model.model

    @property
    def language_model(self) -> nn.Module:
        return self.model.model.language_model

    @property
    def decoder_layers(self) -> nn.ModuleList:
        return self.language_model.layers

    @property
    def final_norm(self) -> nn.Module:
        return self.language_model.norm

    @property
    def lm_head(self) -> nn.Module:
        return self.model.lm_head

    @property
    def input_embeddings(self) -> nn.Module:
        """The language model's input embedding table (``embed_tokens``)."""
        return self.language_model.get_input_embeddings()

    @property
    def multimodal_projector(self) -> nn.Module | None:
        """The projector from vision features into the LLM's embedding space (LLaVA's ``multi_modal_projector``)."""
        return getattr(self.model.model, "multi_modal_projector", None)

    @property
    def vision_tower(self) -> nn.Module:
        raise NotImplementedError

    @property
    def vision_layers(self) -> nn.ModuleList:
        raise NotImplementedError

    @property
    def num_layers(self) -> int:
        return len(self.decoder_layers)

    @property
    def attn_implementation(self) -> str:
        return self.language_model.config._attn_implementation or "eager"

    @property
    def image_token_id(self) -> int:
        raise NotImplementedError

    # ---- call conventions (transformers-version sensitive) ------------------------------------------
    cache_kwarg_names: tuple[str, ...] = ("cache", "past_key_values")

    def find_cache(self, kwargs: dict[str, Any]) -> Any:
        for name in self.cache_kwarg_names:
            if kwargs.get(name) is not None:
                return kwargs[name]
        return None

    @staticmethod
    def cache_layer_lengths(cache: Any) -> list[int]:
        """Tokens held by each layer of a transformers ``DynamicCache`` (``cache.layers[i].keys`` in 5.x)."""
        return [
            int(layer.keys.shape[-2]) if getattr(layer, "keys", None) is not None else 0
            for layer in cache.layers
        ]

    @staticmethod
    def cache_layer_bytes_per_token(cache: Any) -> list[int]:
        """Bytes of keys + values per cached token, per layer."""
        out = []
        for layer in cache.layers:
            keys, values = getattr(layer, "keys", None), getattr(layer, "values", None)
            if keys is None or keys.shape[-2] == 0:
                out.append(0)
                continue
            per = keys.numel() // keys.shape[-2] * keys.element_size()
            out.append(per + values.numel() // values.shape[-2] * values.element_size())
        return out

    def rotary(self, hidden: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(cos, sin) for ``position_ids`` given as (B, S) or in the engine's (A, B, S) layout."""
        if position_ids.dim() == 3:
            position_ids = position_ids[0]
        return self.language_model.rotary_emb(hidden, position_ids)

    def canonical_positions(
        self, position_ids: torch.Tensor | None, bsz: int, seq: int, start: int, device: torch.device
    ) -> torch.Tensor:
        """Positions of a language-model call in the engine's layout (A, B, S), A = 1 for 1-D RoPE;
        ``None`` means ``start, start + 1, …`` as the model would number them."""
        if position_ids is None:
            position_ids = torch.arange(start, start + seq, device=device)[None]
        if position_ids.dim() == 3:
            position_ids = position_ids[0]
        return position_ids.expand(bsz, -1)[None]

    def layer_position_ids(self, positions: torch.Tensor) -> torch.Tensor | None:
        """The ``position_ids`` a decoder layer receives for positions in the engine's layout."""
        return positions[0]

    def run_layer(self, index: int, hidden: torch.Tensor, layer_kwargs: dict[str, Any]) -> torch.Tensor:
        """Run decoder layer ``index`` on ``hidden`` with the given mask/positions and no cache."""
        kwargs = {k: v for k, v in layer_kwargs.items() if k not in self.cache_kwarg_names}
        kwargs["use_cache"] = False
        out = self.decoder_layers[index](hidden, **kwargs)
        return out[0] if isinstance(out, tuple) else out

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.final_norm(hidden))

    def visual_mask(self, input_ids: torch.Tensor | None, inputs_embeds: torch.Tensor | None) -> torch.Tensor:
        """(B, S) bool: which prompt positions hold visual tokens."""
        if input_ids is not None:
            return input_ids == self.image_token_id
        if inputs_embeds is None:
            raise ValueError("need input_ids or inputs_embeds to locate image tokens")
        embed = self.language_model.get_input_embeddings()
        ref = embed(torch.tensor(self.image_token_id, device=inputs_embeds.device)).to(inputs_embeds.dtype)
        return (inputs_embeds == ref).all(-1)

    def visual_kinds(
        self, input_ids: torch.Tensor | None, inputs_embeds: torch.Tensor | None
    ) -> torch.Tensor:
        """(B, S) long: 0 for text, 1 for image tokens, 2 for video tokens."""
        return self.visual_mask(input_ids, inputs_embeds).long()

    def visual_token_counts(self, kinds: torch.Tensor, embeds: torch.Tensor) -> torch.Tensor:
        """(B,) prunable visual tokens per sample (structural tokens left out), without a host sync."""
        return (kinds > 0).sum(1)

    def visual_layout(
        self, kinds: torch.Tensor, embeds: torch.Tensor, positions: torch.Tensor
    ) -> list[list[VisualItem]]:
        """Per sample, its images/videos in prompt order. ``kinds`` (B, S) from :meth:`visual_kinds`,
        ``embeds`` the language model's input embeddings, ``positions`` (A, B, S)."""
        raise NotImplementedError

    # ---- a decoder layer evaluated for a few query rows (probes, attention-row scores) ---------------
    def attention_probs(
        self,
        index: int,
        hidden: torch.Tensor,
        rows: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        padding: torch.Tensor,
    ) -> torch.Tensor:
        """Attention probabilities (B, H, Q, S) of decoder layer ``index`` for query positions ``rows`` only,
        recomputed from the layer's input ``hidden`` (B, S, D) and rotary ``cos``/``sin`` — the model itself
        keeps its SDPA/FlashAttention kernel."""
        scores, _ = llama_attention.query_logits(self.decoder_layers[index], hidden, rows, cos, sin, padding)
        return scores.softmax(-1)

    def layer_rows(
        self,
        index: int,
        hidden: torch.Tensor,
        rows: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        padding: torch.Tensor,
        hidden_rows: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Output (B, Q, D) of decoder layer ``index`` at positions ``rows`` only (see
        :func:`trio_vlm.adapters.llama_attention.layer_rows`)."""
        layer = self.decoder_layers[index]
        return llama_attention.layer_rows(layer, hidden, rows, cos, sin, padding, hidden_rows)

    def rotary_keys(self, index: int, hidden: torch.Tensor, layer_kwargs: dict[str, Any]) -> torch.Tensor:
        """(B, S, H_kv·d) post-RoPE keys of decoder layer ``index`` from its input ``hidden``."""
        cos, sin = layer_kwargs["position_embeddings"]
        return llama_attention.rotary_keys(self.decoder_layers[index], hidden, cos, sin)

    # ---- vision side ---------------------------------------------------------------------------------
    def cls_attention_from_input(
        self, layer: nn.Module, hidden_in: torch.Tensor, layer_kwargs: dict[str, Any] | None = None
    ) -> torch.Tensor | list[torch.Tensor]:
        """Head-averaged [CLS]→patch attention of a vision layer, recomputed from the layer's input: one row
        per vision row (a (rows, N) tensor or a list of 1-D rows)."""
        raise NotImplementedError

    def vision_input_rows(self, hidden_in: torch.Tensor, layer_kwargs: dict[str, Any]) -> list[torch.Tensor]:
        """A vision layer's input split into one (prefix + N, D) row per vision row."""
        return list(hidden_in)

    def projected_rows(self) -> list[torch.Tensor] | None:
        """The projector's output of the current prefill, one (N, D) row per vision row over its whole patch
        axis (before any family-specific packing drops patches), or ``None`` where it is not captured."""
        return None
