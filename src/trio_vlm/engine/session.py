"""The pruning engine: forward hooks on a stock HF model that drop visual tokens during prefill.

Written once for every method and model family. Hooks (no model code is forked):

* multimodal model, pre/post: find the visual tokens of a new prefill, time it;
* vision layers the method asks for, pre: recompute the [CLS]→patch attention rows;
* language model, pre/post: capture the 2-D mask and positions of the call; count decode tokens;
* every decoder layer, pre: run a stage where the schedule says so (gather hidden states, re-pad, renumber),
  and give every layer that sees a pruned sequence its own mask and rotary embeddings — in prefill and in
  decode, where each layer's cache has its own length.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from trio_vlm.adapters.base import ModelAdapter
from trio_vlm.engine.layout import SampleMeta, align_rows, split_keep
from trio_vlm.engine.masks import layer_attention_mask
from trio_vlm.engine.state import SequenceState, gather_hidden, last_valid_index, to_device
from trio_vlm.events import PruneEvent
from trio_vlm.methods.base import Group, Selection, StageContext, TokenMethod

logger = logging.getLogger(__name__)


@dataclass
class _StageRecord:
    """What decode needs to know about the layers from ``first_layer`` on: their prefill key validity."""

    first_layer: int
    padding: torch.Tensor
    dropped: torch.Tensor


@dataclass
class _Call:
    """State of one prefill and the decode steps that follow it."""

    index: int
    visual_mask: torch.Tensor | None = None
    kinds: torch.Tensor | None = None
    meta: list[SampleMeta] = field(default_factory=list)
    cls_rows: dict[int, list[torch.Tensor]] = field(default_factory=dict)
    vision_inputs: dict[int, list[torch.Tensor]] = field(default_factory=dict)
    prefill_len: int = 0
    state: SequenceState | None = None
    stages: list[_StageRecord] = field(default_factory=list)
    decoded: int = 0
    kwargs_cache: dict[int, dict[str, Any]] = field(default_factory=dict)
    previous: tuple[torch.Tensor, dict[str, Any]] | None = None
    in_prefill: bool = False
    step_attention_mask: torch.Tensor | None = None
    step_position_ids: torch.Tensor | None = None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class PruneSession:
    """Installs the hooks for one ``(model, method)`` pair and records what they do."""

    def __init__(self, model: nn.Module, adapter: ModelAdapter, method: TokenMethod) -> None:
        self.model = model
        self.adapter = adapter
        self.method = method
        self.schedule = method.schedule()
        self.schedule.validate(adapter.num_layers)
        adapter.check_supported(method)
        self.position_mode = method.position_mode or adapter.default_position_mode
        if self.position_mode not in ("compact", "original"):
            raise ValueError(f"unknown position convention {self.position_mode!r}")
        self.events: list[PruneEvent] = []
        self.prefill_seconds: list[float] = []
        self._handles: list[Any] = []
        self._call: _Call | None = None
        self._calls = 0
        self._t0 = 0.0
        # generate() in transformers 5.x encodes images before the first forward: keep what the vision hooks
        # saw (and when the tower started) until the prefill that consumes it.
        self._pending_cls: dict[int, list[torch.Tensor]] = {}
        self._pending_inputs: dict[int, list[torch.Tensor]] = {}
        self._vision_t0: float | None = None
        self._in_stage = False  # a method may run decoder layers itself (e.g. the reference probe)
        n_vision = len(adapter.vision_layers)
        self._cls_layers: dict[int, list[int]] = {}
        self._input_layers: dict[int, list[int]] = {}
        for wanted, table in (
            (method.cls_attention_layers(), self._cls_layers),
            (method.vision_layer_inputs(), self._input_layers),
        ):
            for idx in wanted:
                if not -n_vision <= idx < n_vision:
                    raise ValueError(f"vision layer {idx} out of range for a tower with {n_vision} layers")
                table.setdefault(idx % n_vision, []).append(idx)
        # first layer to see the shorter sequence -> (stage label, position in layer_list; -1 = encoder)
        stages: dict[int, tuple[str | int, int]] = {}
        if self.schedule.has_encoder_stage:
            stages[0] = ("encoder", -1)
        for pos, layer in enumerate(self.schedule.layer_list):
            stages[layer] = (layer, pos)
        self._stages = stages

    # ---- install / remove ---------------------------------------------------------------------------
    def install(self) -> None:
        mm = self.adapter.multimodal_model
        self._handles.append(mm.register_forward_pre_hook(self._mm_pre, with_kwargs=True))
        self._handles.append(mm.register_forward_hook(self._mm_post, with_kwargs=True))
        lm = self.adapter.language_model
        self._handles.append(lm.register_forward_pre_hook(self._lm_pre, with_kwargs=True))
        self._handles.append(lm.register_forward_hook(self._lm_post, with_kwargs=True))
        for i, layer in enumerate(self.adapter.decoder_layers):
            self._handles.append(layer.register_forward_pre_hook(self._layer_hook(i), with_kwargs=True))
        tower = self.adapter.vision_tower
        self._handles.append(tower.register_forward_pre_hook(self._vision_start, with_kwargs=True))
        self._handles.extend(self.adapter.install_hooks())
        for i in sorted(set(self._cls_layers) | set(self._input_layers)):
            layer = self.adapter.vision_layers[i]
            self._handles.append(layer.register_forward_pre_hook(self._vision_hook(i), with_kwargs=True))

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._call = None

    # ---- multimodal model: new prefill? ------------------------------------------------------------
    def _is_prefill(self, kwargs: dict[str, Any]) -> bool:
        cache = self.adapter.find_cache(kwargs)
        return cache is None or cache.get_seq_length() == 0

    def _mm_pre(self, module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        if not self._is_prefill(kwargs):
            return
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        embeds = kwargs.get("inputs_embeds")
        self._call = _Call(index=self._calls, in_prefill=True)
        self._calls += 1
        self._call.kinds = self.adapter.visual_kinds(input_ids, embeds)
        self._call.visual_mask = self._call.kinds > 0
        self.adapter.begin_prefill(kwargs)
        self._call.cls_rows = self._pending_cls
        self._call.vision_inputs = self._pending_inputs
        device = (input_ids if input_ids is not None else embeds).device
        _sync(device)
        self._t0 = self._vision_t0 if self._vision_t0 is not None else time.perf_counter()

    def _mm_post(self, module: nn.Module, args: tuple, kwargs: dict[str, Any], output: Any) -> None:
        call = self._call
        if call is None or not call.in_prefill:
            return
        call.in_prefill = False
        _sync(call.visual_mask.device)
        self.prefill_seconds.append(time.perf_counter() - self._t0)
        self._pending_cls = {}
        self._pending_inputs = {}
        self._vision_t0 = None
        self.adapter.end_prefill()

    def _vision_start(self, module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        if self._vision_t0 is None:
            self._vision_t0 = time.perf_counter()
        self.adapter.on_vision_tower(args, kwargs)

    def _vision_hook(self, index: int):
        # Rows are appended: a family may run the tower more than once per prompt (Qwen2.5-VL: images, then
        # videos), and the vision rows of a call are numbered in that order.
        def hook(module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
            hidden = kwargs.get("hidden_states", args[0] if args else None)
            if index in self._input_layers:
                rows = self.adapter.vision_input_rows(hidden, kwargs)
                for key in self._input_layers[index]:
                    self._pending_inputs.setdefault(key, []).extend(rows)
            if index in self._cls_layers:
                with torch.no_grad():
                    rows = list(self.adapter.cls_attention_from_input(module, hidden, kwargs))
                for key in self._cls_layers[index]:
                    self._pending_cls.setdefault(key, []).extend(rows)

        return hook

    # ---- language model: per-call inputs -----------------------------------------------------------
    def _lm_pre(self, module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        call = self._call
        if call is None:
            return
        embeds = kwargs.get("inputs_embeds")
        if embeds is None:
            raise ValueError("trio-vlm expects the language model to be called with inputs_embeds")
        mask2d = kwargs.get("attention_mask")
        if mask2d is not None and mask2d.dim() != 2:
            raise ValueError("trio-vlm needs a 2-D attention_mask (or None), got a prepared 4-D mask")
        call.kwargs_cache.clear()
        call.step_attention_mask = mask2d
        call.step_position_ids = kwargs.get("position_ids")
        if call.in_prefill and call.state is None:
            self._start_prefill(call, embeds, mask2d, kwargs.get("position_ids"))

    def _lm_post(self, module: nn.Module, args: tuple, kwargs: dict[str, Any], output: Any) -> None:
        call = self._call
        if call is None or call.state is None or call.in_prefill:
            return
        call.decoded += kwargs["inputs_embeds"].shape[1]

    def _start_prefill(
        self,
        call: _Call,
        embeds: torch.Tensor,
        mask2d: torch.Tensor | None,
        position_ids: torch.Tensor | None,
    ) -> None:
        bsz, seq, _ = embeds.shape
        device = embeds.device
        kinds = call.kinds.to(device)
        if kinds.shape != (bsz, seq):
            raise ValueError(f"image-token mask {tuple(kinds.shape)} does not match the prompt {(bsz, seq)}")
        if self._stages and not bool((kinds > 0).any()):
            raise ValueError(
                f"no image tokens (id {self.adapter.image_token_id}) in the input: put the image placeholder "
                "in the prompt (e.g. via the processor) so there is something to prune"
            )
        padding = torch.ones(bsz, seq, dtype=torch.bool, device=device) if mask2d is None else mask2d.bool()
        pad_left = bool((~padding[:, 0]).any()) and bool(padding[:, -1].all())
        position_ids = self.adapter.canonical_positions(position_ids, bsz, seq, 0, device)
        image = torch.full((bsz, seq), -1, dtype=torch.long, device=device)
        vis_index = torch.full((bsz, seq), -1, dtype=torch.long, device=device)
        layout = self.adapter.visual_layout(kinds, embeds, position_ids) if self._stages else [[]] * bsz
        call.meta = []
        for b, items in enumerate(layout):
            count = 0
            for m, item in enumerate(items):
                pos = item.positions.to(device)
                image[b, pos] = m
                vis_index[b, pos] = torch.arange(count, count + pos.numel(), device=device)
                count += pos.numel()
            call.meta.append(SampleMeta.from_items(items, device))
        call.prefill_len = seq
        call.state = SequenceState(
            padding=padding,
            visual=vis_index,
            image=image,
            original_positions=position_ids.clone(),
            positions=position_ids.clone(),
            dropped=torch.zeros(bsz, dtype=torch.long, device=device),
            pad_left=pad_left,
        )

    # ---- decoder layers ------------------------------------------------------------------------------
    def _layer_hook(self, index: int):
        def hook(module: nn.Module, args: tuple, kwargs: dict[str, Any]):
            call = self._call
            if call is None or call.state is None or self._in_stage:
                return None
            hidden = args[0] if args else kwargs.pop("hidden_states")
            rest = args[1:] if args else ()
            changed = False
            if call.in_prefill:
                kwargs, hidden, changed = self._prefill_layer(call, index, hidden, kwargs)
            elif call.stages and index >= call.stages[0].first_layer:
                kwargs = {**kwargs, **self._decode_kwargs(call, index, hidden)}
                changed = True
            if not changed:
                return None
            return (hidden, *rest), kwargs

        return hook

    def _state_kwargs(self, state: SequenceState, hidden: torch.Tensor) -> dict[str, Any]:
        mask = layer_attention_mask(
            state.padding, state.length, self.adapter.attn_implementation, hidden.dtype
        )
        return {
            "attention_mask": mask,
            "position_ids": self.adapter.layer_position_ids(state.positions),
            "position_embeddings": self.adapter.rotary(hidden, state.positions),
        }

    def _prefill_layer(self, call: _Call, index: int, hidden: torch.Tensor, kwargs: dict[str, Any]):
        changed = bool(call.stages)
        if changed:
            if "prefill" not in call.kwargs_cache:
                call.kwargs_cache["prefill"] = self._state_kwargs(call.state, hidden)
            kwargs = {**kwargs, **call.kwargs_cache["prefill"]}
        if index in self._stages:
            # On a model split over devices, prune where the layer that sees the result lives.
            device = self._layer_device(index)
            if hidden.device != device or call.state.padding.device != device:
                hidden, kwargs = hidden.to(device), to_device(kwargs, device)
                call.state = call.state.to(device)
                call.kwargs_cache.pop("prefill", None)
                if call.previous is not None:
                    call.previous = to_device(call.previous, device)
            stage, stage_pos = self._stages[index]
            new_hidden = self._run_stage(call, stage, index, stage_pos, hidden, kwargs)
            if new_hidden is not None:
                hidden = new_hidden
                call.kwargs_cache["prefill"] = self._state_kwargs(call.state, hidden)
                kwargs = {**kwargs, **call.kwargs_cache["prefill"]}
                changed = True
        if index + 1 in self._stages:
            device = self._layer_device(index)
            call.previous = (hidden.to(device), to_device(kwargs, device))
        return kwargs, hidden, changed

    def _layer_device(self, index: int) -> torch.device:
        return next(self.adapter.decoder_layers[index].parameters()).device

    def _decode_kwargs(self, call: _Call, index: int, hidden: torch.Tensor) -> dict[str, Any]:
        record = next(r for r in reversed(call.stages) if r.first_layer <= index)
        key = record.first_layer
        if key in call.kwargs_cache:
            return call.kwargs_cache[key]
        bsz, q_len, _ = hidden.shape
        device = hidden.device
        seen = call.decoded + q_len
        step_mask = call.step_attention_mask
        if step_mask is not None:
            new_mask = step_mask[:, call.prefill_len :].bool().to(device)
            if new_mask.shape[1] != seen:
                raise ValueError(
                    f"attention_mask has {step_mask.shape[1]} columns; expected prefill {call.prefill_len} + "
                    f"{seen} decoded tokens"
                )
        else:
            new_mask = torch.ones(bsz, seen, dtype=torch.bool, device=device)
        padding = torch.cat([record.padding.to(device), new_mask], dim=1)
        positions = self.adapter.canonical_positions(
            call.step_position_ids, bsz, q_len, call.prefill_len + call.decoded, device
        )
        positions = positions.to(device)
        if self.position_mode == "compact":
            positions = positions - record.dropped.to(device)[None, :, None]
        out = {
            "attention_mask": layer_attention_mask(
                padding, q_len, self.adapter.attn_implementation, hidden.dtype
            ),
            "position_ids": self.adapter.layer_position_ids(positions),
            "position_embeddings": self.adapter.rotary(hidden, positions),
        }
        call.kwargs_cache[key] = out
        return out

    # ---- a stage -------------------------------------------------------------------------------------
    def _keep(self, stage: str | int, stage_pos: int, available: int) -> int:
        if stage == "encoder":
            return self.schedule.encoder_keep(available)
        return self.schedule.llm_keep(stage_pos, available)

    def _groups(
        self, call: _Call, stage: str | int, stage_pos: int
    ) -> tuple[list[Group], list[Group], list[tuple[int, torch.Tensor]]]:
        """(groups to prune, groups kept whole, (vision row, patch indices) of groups lying on one row).

        One group per image per sample; at the encoder stage of a family that prunes tiles separately
        (LLaVA-NeXT), one group per tile, the image's budget split over its tiles by size."""
        state = call.state
        to_prune, whole, pieces = [], [], []
        split = stage == "encoder" and self.adapter.split_tiles_at_encoder
        for b in range(state.padding.shape[0]):
            meta = call.meta[b]
            for m in range(int(state.image[b].max()) + 1):
                pos = (state.image[b] == m).nonzero().flatten()
                original = state.visual[b, pos]
                keep = self._keep(stage, stage_pos, int(pos.numel()))
                parts = [(pos, original, keep)]
                tile = meta.take("tile", original)
                if split and tile is not None and int(tile.max()) > int(tile.min()):
                    tiles = torch.unique(tile)
                    masks = [tile == t for t in tiles]
                    quotas = split_keep(keep, [int(mask.sum()) for mask in masks])
                    parts = [(pos[mask], original[mask], q) for mask, q in zip(masks, quotas)]
                for p, o, k in parts:
                    rows = meta.take("vision_row", o)
                    image_row = int(rows[0]) if rows is not None else len(to_prune) + len(whole)
                    g = Group(
                        sample=b,
                        image_row=image_row,
                        positions=p,
                        original=o,
                        keep=k,
                        tile=meta.take("tile", o),
                        row=meta.take("row", o),
                        col=meta.take("col", o),
                        kind=meta.kinds[m] if m < len(meta.kinds) else "image",
                    )
                    if rows is not None and bool((rows == image_row).all()):
                        pieces.append((image_row, meta.take("patch", o)))
                    (to_prune if g.keep < g.size else whole).append(g)
        return to_prune, whole, pieces

    def _vision_tables(
        self, captured: dict[int, list[torch.Tensor]], pieces: list[tuple[int, torch.Tensor]], prefix: int
    ) -> dict[int, Any]:
        """Captured vision-side rows, each aligned with the group lying on it (see :func:`align_rows`)."""
        return {key: align_rows(rows, pieces, prefix) for key, rows in captured.items() if rows}

    def _run_stage(
        self,
        call: _Call,
        stage: str | int,
        index: int,
        stage_pos: int,
        hidden: torch.Tensor,
        kwargs: dict[str, Any],
    ) -> torch.Tensor | None:
        state = call.state
        to_prune, whole, pieces = self._groups(call, stage, stage_pos)
        selection = Selection(kept=[], scores=[])
        if to_prune:
            wanted = [i for keys in self._cls_layers.values() for i in keys]
            missing = [i for i in wanted if not call.cls_rows.get(i)] if stage == "encoder" else []
            if missing:
                raise RuntimeError(f"vision [CLS] attention for layers {missing} was not captured")
            if stage != "encoder":
                pieces = []
            ctx = StageContext(
                stage=stage,
                layer_index=index,
                hidden=hidden,
                groups=to_prune,
                padding=state.padding,
                last_valid=last_valid_index(state.padding),
                layer_kwargs=kwargs,
                adapter=self.adapter,
                cls_attention=self._vision_tables(call.cls_rows, pieces, 0),
                vision_inputs=self._vision_tables(call.vision_inputs, pieces, self.adapter.vision_row_prefix),
                previous_hidden=call.previous[0] if index > 0 and call.previous else None,
                previous_kwargs=call.previous[1] if index > 0 and call.previous else None,
            )
            self._in_stage = True
            try:
                selection = self.method.select(ctx)
            finally:
                self._in_stage = False
            self._check_selection(selection, to_prune)
        self._record(call, stage, index, to_prune, whole, selection)
        if not to_prune:
            return None
        keep = torch.ones_like(state.padding)
        for g, kept in zip(to_prune, selection.kept):
            drop = torch.ones(g.size, dtype=torch.bool, device=keep.device)
            drop[kept] = False
            keep[g.sample, g.positions[drop]] = False
        hidden = hidden.clone()
        for i, g in enumerate(to_prune):
            if selection.replacement is not None and selection.replacement[i] is not None:
                hidden[g.sample, g.positions[selection.kept[i]]] = selection.replacement[i].to(hidden.dtype)
        new_state, src, valid = state.gather(keep, compact=self.position_mode == "compact")
        call.state = new_state
        call.stages.append(
            _StageRecord(first_layer=index, padding=new_state.padding, dropped=new_state.dropped)
        )
        return gather_hidden(hidden, src, valid)

    @staticmethod
    def _check_selection(selection: Selection, groups: list[Group]) -> None:
        if len(selection.kept) != len(groups):
            raise RuntimeError(f"method returned {len(selection.kept)} selections for {len(groups)} images")
        for g, kept in zip(groups, selection.kept):
            if kept.numel() and (int(kept.min()) < 0 or int(kept.max()) >= g.size):
                raise RuntimeError(f"method selected an index outside 0..{g.size - 1}")
            if kept.numel() > 1 and not bool((kept[1:] > kept[:-1]).all()):
                raise RuntimeError("method must return strictly ascending, unique indices")
            if kept.numel() == 0:
                raise RuntimeError("method kept no token of an image")

    def _record(
        self,
        call: _Call,
        stage: str | int,
        index: int,
        to_prune: list[Group],
        whole: list[Group],
        sel: Selection,
    ) -> None:
        bsz = call.state.padding.shape[0]
        cand = [[] for _ in range(bsz)]
        scores: list[list] = [[] for _ in range(bsz)]
        kept = [[] for _ in range(bsz)]
        for i, g in enumerate(to_prune):
            cand[g.sample].append(g.original)
            scores[g.sample].append(sel.scores[i])
            kept[g.sample].append(g.original[sel.kept[i]])
        for g in whole:
            cand[g.sample].append(g.original)
            scores[g.sample].append(None)
            kept[g.sample].append(g.original)
        empty = torch.empty(0, dtype=torch.long, device=call.state.padding.device)

        def cat(parts: list[torch.Tensor]) -> torch.Tensor:
            return torch.sort(torch.cat(parts)).values if parts else empty

        def cat_scores(b: int) -> torch.Tensor | None:
            if not scores[b] or any(s is None for s in scores[b]):
                return None
            order = torch.argsort(torch.cat(cand[b]).cpu())
            return torch.cat([s.detach().float().cpu() for s in scores[b]])[order]

        self.events.append(
            PruneEvent(
                stage=stage,
                layer_index=index,
                call=call.index,
                method=self.method.name,
                candidates=[cat(c).cpu() for c in cand],
                scores=[cat_scores(b) for b in range(bsz)],
                kept=[cat(k).cpu() for k in kept],
            )
        )
