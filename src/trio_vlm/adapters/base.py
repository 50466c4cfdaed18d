"""Model-family adapters: everything the engine and methods need to know about a model's internals.

All code that depends on transformers' internal layout or keyword names lives in adapters, one module per
family; methods and the engine only talk to this interface.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from trio_vlm.engine.layout import VisualItem


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding for ``x`` (B, H, S, d) with ``cos``/``sin`` (B, S, d) (Llama's half-rotation layout)."""
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    return x * cos + _rotate_half(x) * sin


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

    def visual_layout(
        self, kinds: torch.Tensor, embeds: torch.Tensor, positions: torch.Tensor
    ) -> list[list[VisualItem]]:
        """Per sample, its images/videos in prompt order. ``kinds`` (B, S) from :meth:`visual_kinds`,
        ``embeds`` the language model's input embeddings, ``positions`` (A, B, S)."""
        raise NotImplementedError

    # ---- a decoder layer evaluated for a few query rows (probes, attention-row scores) ---------------
    def _query_rows(
        self,
        index: int,
        hidden: torch.Tensor,
        rows: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        padding: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Masked float32 attention logits (B, H, Q, S) of layer ``index`` for query positions ``rows`` (B, Q),
        and the layer's normalised input (B, S, D)."""
        layer = self.decoder_layers[index]
        attn = layer.self_attn
        bsz, seq, _ = hidden.shape
        head_dim = attn.head_dim
        x = layer.input_layernorm(hidden)
        x_rows = x.gather(1, rows.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))
        q = attn.q_proj(x_rows).view(bsz, rows.shape[1], -1, head_dim).transpose(1, 2)
        k = attn.k_proj(x).view(bsz, seq, -1, head_dim).transpose(1, 2)
        cos, sin = cos.expand(bsz, -1, -1), sin.expand(bsz, -1, -1)
        rot_gather = rows.unsqueeze(-1).expand(-1, -1, cos.shape[-1])
        q = apply_rope(q, cos.gather(1, rot_gather), sin.gather(1, rot_gather))
        k = apply_rope(k, cos, sin)
        groups = q.shape[1] // k.shape[1]
        # (B, H_kv, groups·Q, d): query heads sharing a key head are stacked, so keys are never repeated
        q = q.reshape(bsz, k.shape[1], groups * rows.shape[1], head_dim)
        scores = (q @ k.transpose(-1, -2)).float() * attn.scaling
        scores = scores.view(bsz, k.shape[1] * groups, rows.shape[1], seq)
        allowed = (torch.arange(seq, device=hidden.device)[None, None, :] <= rows[:, :, None]) & padding[
            :, None, :
        ]
        return scores.masked_fill(~allowed[:, None], torch.finfo(scores.dtype).min), x

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
        scores, _ = self._query_rows(index, hidden, rows, cos, sin, padding)
        return scores.softmax(-1)

    def layer_rows(
        self,
        index: int,
        hidden: torch.Tensor,
        rows: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        padding: torch.Tensor,
    ) -> torch.Tensor:
        """Output of decoder layer ``index`` at positions ``rows`` (B, Q) only, without a cache. Returns (B, Q, D).

        Keys are projected for all S tokens (that is how gradients reach visual tokens); queries, the attention
        output, the residual and the MLP only for the Q rows. Values are never projected token by token:
        ``Σ_j p_j · W_v x_j = W_v (Σ_j p_j x_j)``, so each head averages the normalised inputs first and projects
        Q·H vectors — the same numbers up to rounding, and a backward pass through a (Q·H × S) product instead
        of an S × D × D one. Causal + padding masking as in the full layer.
        """
        layer = self.decoder_layers[index]
        attn = layer.self_attn
        scores, x = self._query_rows(index, hidden, rows, cos, sin, padding)
        probs = scores.softmax(-1).to(x.dtype)  # (B, H, Q, S)
        bsz, heads, n_rows, _ = probs.shape
        mixed = probs.reshape(bsz, heads * n_rows, -1) @ x  # (B, H·Q, D): one product, no broadcast copy
        mixed = mixed.view(bsz, heads, n_rows, -1).permute(1, 0, 2, 3).reshape(heads, bsz * n_rows, -1)
        w_v = attn.v_proj.weight.view(-1, attn.head_dim, x.shape[-1])  # (H_kv, d, D)
        groups = heads // w_v.shape[0]
        out = mixed @ w_v.repeat_interleave(groups, dim=0).transpose(1, 2)  # (H, B·Q, d)
        out = out.view(heads, bsz, n_rows, -1).permute(1, 2, 0, 3)  # (B, Q, H, d)
        if attn.v_proj.bias is not None:  # attention weights sum to one, so the bias passes through
            out = out + attn.v_proj.bias.view(-1, attn.head_dim).repeat_interleave(groups, dim=0)
        out = out.reshape(bsz, n_rows, -1)
        h = hidden.gather(1, rows.unsqueeze(-1).expand(-1, -1, hidden.shape[-1])) + attn.o_proj(out)
        return h + layer.mlp(layer.post_attention_layernorm(h))

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
