"""The pruning engine's hooks on a stock HF model and the life of one call (prefill, then decode steps).

Written once for every method and model family; no model code is forked:

* multimodal model, pre/post: notice a new prefill, time it (device-synchronised), for every method alike;
* vision layers the method asks for, pre: recompute the [CLS]→patch attention rows / keep the layer inputs;
* language model, pre/post: capture the 2-D mask and positions of the call; count decode tokens;
* every decoder layer, pre: run a stage where the schedule says so (:mod:`trio_vlm.engine.stages`, then the one
  sequence surgery :func:`trio_vlm.engine.sequence.rebuild`), and give every layer that sees a pruned sequence
  its own mask and rotary embeddings — in prefill and in decode (:mod:`trio_vlm.engine.decode`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from trio_vlm.contract import PruneEvent, Selection, Stage, StageContext
from trio_vlm.engine.decode import StageRecord, decode_layer_kwargs
from trio_vlm.engine.layout import SampleMeta, align_rows, share_expanded_rows
from trio_vlm.engine.masks import layer_attention_mask
from trio_vlm.engine.sequence import SequenceState, last_valid_index, rebuild, start_state, to_device
from trio_vlm.engine.stages import (
    ImageTrack,
    check_selection,
    image_tracks,
    stage_event,
    stage_groups,
    stage_surgery,
)

logger = logging.getLogger(__name__)


@dataclass
class CallRecord:
    """One prefill call: its index, wall time and the visual tokens each sample had when it started."""

    index: int
    prefill_seconds: float = float("nan")
    visual_counts: torch.Tensor | None = None

    @property
    def visual_tokens(self) -> list[int]:
        return [] if self.visual_counts is None else [int(v) for v in self.visual_counts.tolist()]


@dataclass
class _Call:
    """State of one prefill and the decode steps that follow it."""

    record: CallRecord
    kinds: torch.Tensor | None = None
    meta: list[SampleMeta] = field(default_factory=list)
    cls_rows: dict[int, list[torch.Tensor]] = field(default_factory=dict)
    vision_inputs: dict[int, list[torch.Tensor]] = field(default_factory=dict)
    prefill_len: int = 0
    prompt_embeds: torch.Tensor | None = None
    prompt_image: torch.Tensor | None = None
    state: SequenceState | None = None
    stages: list[StageRecord] = field(default_factory=list)
    tracks: list[ImageTrack] = field(default_factory=list)
    invalid: list[torch.Tensor] = field(default_factory=list)  # device flags: a method's answer was malformed
    decoded: int = 0
    kwargs_cache: dict[Any, dict[str, Any]] = field(default_factory=dict)
    previous: tuple[torch.Tensor, dict[str, Any]] | None = None
    in_prefill: bool = False
    step_attention_mask: torch.Tensor | None = None
    step_position_ids: torch.Tensor | None = None
    causal: bool = True  # False once an LLM stage ran for a method whose later prefill layers lose causality

    @property
    def index(self) -> int:
        return self.record.index


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class PruneSession:
    """Installs the hooks for one ``(model, method)`` pair and records what they do."""

    def __init__(self, model: nn.Module, adapter: Any, method: Any) -> None:
        self.model = model
        self.adapter = adapter
        self.method = method
        self.schedule = method.schedule()
        self.schedule.validate(adapter.num_layers)
        adapter.check_supported(method)
        self.position_mode = method.position_convention() or adapter.default_position_mode
        if self.position_mode not in ("compact", "original"):
            raise ValueError(f"unknown position convention {self.position_mode!r}")
        self._causal_after_drop = bool(method.causal_after_drop(adapter.family))
        self.events: list[PruneEvent] = []
        self.calls: list[CallRecord] = []
        self._handles: list[Any] = []
        self._call: _Call | None = None
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
        # first decoder layer to see the shorter sequence -> its stage
        self._stages: dict[int, Stage] = {}
        if self.schedule.has_encoder_stage:
            self._stages[0] = Stage.encoder()
        for pos, layer in enumerate(self.schedule.layer_list):
            self._stages[layer] = Stage(layer, pos)

    @property
    def prefill_seconds(self) -> list[float]:
        return [c.prefill_seconds for c in self.calls]

    # ---- install / remove ---------------------------------------------------------------------------
    def install(self) -> None:
        mm = self.adapter.multimodal_model
        self._handles.append(mm.register_forward_pre_hook(self._mm_pre, with_kwargs=True))
        # always_call: a forward that raises still ends its prefill (nothing captured leaks into the next call)
        self._handles.append(mm.register_forward_hook(self._mm_post, with_kwargs=True, always_call=True))
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

    # ---- multimodal model: a new prefill? ----------------------------------------------------------
    def _is_prefill(self, kwargs: dict[str, Any]) -> bool:
        cache = self.adapter.find_cache(kwargs)
        return cache is None or cache.get_seq_length() == 0

    def _mm_pre(self, module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        if not self._is_prefill(kwargs):
            return
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        embeds = kwargs.get("inputs_embeds")
        record = CallRecord(index=len(self.calls))
        self.calls.append(record)
        self._call = _Call(record=record, in_prefill=True)
        self._call.kinds = self.adapter.visual_kinds(input_ids, embeds)
        self.adapter.begin_prefill(kwargs)
        self._call.cls_rows = self._pending_cls
        self._call.vision_inputs = self._pending_inputs
        device = (input_ids if input_ids is not None else embeds).device
        _sync(device)
        self._t0 = self._vision_t0 if self._vision_t0 is not None else time.perf_counter()

    def _mm_post(self, module: nn.Module, args: tuple, kwargs: dict[str, Any], output: Any) -> None:
        self._pending_cls = {}
        self._pending_inputs = {}
        self._vision_t0 = None
        call = self._call
        if call is None or not call.in_prefill:
            return
        call.in_prefill = False
        if output is None:  # the forward raised: this prefill never happened
            self._call = None
            self.calls.pop()
            self.adapter.end_prefill()
            return
        _sync(call.kinds.device)
        call.record.prefill_seconds = time.perf_counter() - self._t0
        call.prompt_embeds = None
        call.prompt_image = None
        if call.invalid and bool(torch.stack(call.invalid).any()):  # the prefill's one read of the checks
            raise RuntimeError(
                f"{self.method.name} returned kept indices outside their group, not strictly ascending, or an "
                "order that is not a permutation"
            )
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
        call.record.visual_counts = self.adapter.visual_token_counts(kinds, embeds)
        padding = torch.ones(bsz, seq, dtype=torch.bool, device=device) if mask2d is None else mask2d.bool()
        position_ids = self.adapter.canonical_positions(position_ids, bsz, seq, 0, device)
        layout = self.adapter.visual_layout(kinds, embeds, position_ids) if self._stages else [[]] * bsz
        if self._stages and not any(layout):
            raise ValueError(
                f"no image tokens (id {self.adapter.image_token_id}) in the input: put the image placeholder "
                "in the prompt (e.g. via the processor) so there is something to prune"
            )
        captured = [len(rows) for rows in (*call.cls_rows.values(), *call.vision_inputs.values()) if rows]
        rows_needed = bool(captured) or (
            self.adapter.split_tiles_at_encoder and self.schedule.has_encoder_stage
        )
        row_length = self._row_length(call)
        call.tracks = image_tracks(layout, rows_needed, row_length)
        if captured and len({t.vision_row for track in call.tracks for t in track.tiles or ()}) > captured[0]:
            firsts = [track.tiles[0].vision_row for track in call.tracks]
            layout = share_expanded_rows(layout, kinds, captured[0], firsts)
            call.tracks = image_tracks(layout, rows_needed, row_length)
        call.state, call.meta = start_state(layout, padding, position_ids)
        call.prefill_len = seq
        call.prompt_embeds = embeds
        call.prompt_image = call.state.image

    def _row_length(self, call: _Call):
        """A vision row's patch count from the captured rows ([CLS] rows hold patches only; layer inputs start
        with the adapter's prefix), or ``None`` when the method captures none."""
        cls_rows = next((r for r in call.cls_rows.values() if r), None)
        if cls_rows is not None:
            return lambda row: int(cls_rows[row].shape[0]) if row < len(cls_rows) else -1
        inputs = next((r for r in call.vision_inputs.values() if r), None)
        if inputs is not None:
            prefix = self.adapter.vision_row_prefix
            return lambda row: int(inputs[row].shape[0]) - prefix if row < len(inputs) else -1
        return None

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

    def _state_kwargs(
        self, state: SequenceState, hidden: torch.Tensor, causal: bool = True
    ) -> dict[str, Any]:
        mask = layer_attention_mask(
            state.padding,
            state.length,
            self.adapter.attn_implementation,
            hidden.dtype,
            causal,
            state.all_real,
        )
        return {
            "attention_mask": mask,
            "position_ids": self.adapter.layer_position_ids(state.position_ids),
            "position_embeddings": self.adapter.rotary(hidden, state.position_ids),
        }

    def _prefill_layer(self, call: _Call, index: int, hidden: torch.Tensor, kwargs: dict[str, Any]):
        changed = bool(call.stages) or not call.causal
        if changed:
            if "prefill" not in call.kwargs_cache:
                call.kwargs_cache["prefill"] = self._state_kwargs(call.state, hidden, call.causal)
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
            causal = call.causal
            new_hidden = self._run_stage(call, self._stages[index], hidden, kwargs)
            if new_hidden is not None or call.causal != causal:
                hidden = new_hidden if new_hidden is not None else hidden
                call.kwargs_cache["prefill"] = self._state_kwargs(call.state, hidden, call.causal)
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
        if record.first_layer not in call.kwargs_cache:
            call.kwargs_cache[record.first_layer] = decode_layer_kwargs(
                self.adapter,
                record,
                hidden,
                call.prefill_len,
                call.decoded,
                call.step_attention_mask,
                call.step_position_ids,
                compact=self.position_mode == "compact",
            )
        return call.kwargs_cache[record.first_layer]

    # ---- a stage -------------------------------------------------------------------------------------
    def _keep_for(self, stage: Stage):
        if stage.is_encoder:
            return self.schedule.encoder_keep
        return lambda available: self.schedule.llm_keep(stage.llm_index, available)

    def _run_stage(
        self, call: _Call, stage: Stage, hidden: torch.Tensor, kwargs: dict[str, Any]
    ) -> torch.Tensor | None:
        state = call.state
        split = stage.is_encoder and self.adapter.split_tiles_at_encoder
        to_prune, whole, pieces = stage_groups(call.tracks, state, call.meta, self._keep_for(stage), split)
        selection = Selection(kept=[], scores=[])
        if to_prune:
            wanted = [i for keys in self._cls_layers.values() for i in keys]
            missing = [i for i in wanted if not call.cls_rows.get(i)] if stage.is_encoder else []
            if missing:
                raise RuntimeError(f"vision [CLS] attention for layers {missing} was not captured")
            if not stage.is_encoder:
                pieces = []
            previous = call.previous if stage.layer_index > 0 else None
            if not call.causal:  # the stage itself (a probe) sees the causal mask, whatever the layers get
                kwargs = {**kwargs, **self._state_kwargs(state, hidden)}
            ctx = StageContext(
                stage=stage,
                hidden=hidden,
                groups=to_prune,
                padding=state.padding,
                last_valid=last_valid_index(state.padding),
                layer_kwargs=kwargs,
                adapter=self.adapter,
                cls_attention={k: align_rows(r, pieces, 0) for k, r in call.cls_rows.items() if r},
                vision_inputs={
                    k: align_rows(r, pieces, self.adapter.vision_row_prefix)
                    for k, r in call.vision_inputs.items()
                    if r
                },
                previous_hidden=previous[0] if previous else None,
                previous_kwargs=previous[1] if previous else None,
                prompt_embeds=call.prompt_embeds,
                prompt_index=state.prompt_index,
                prompt_image=call.prompt_image,
                cls_attention_rows=call.cls_rows if stage.is_encoder else {},
                projected_rows=self.adapter.projected_rows() if stage.is_encoder else None,
            )
            self._in_stage = True
            try:
                selection = self.method.select(ctx)
            finally:
                self._in_stage = False
            flag = check_selection(selection, to_prune, hidden.shape[-1], split)
            if flag is not None:
                call.invalid.append(flag)
        if not stage.is_encoder and not self._causal_after_drop:
            call.causal = False
        created: list[torch.Tensor] = []
        surgery = None
        if to_prune:
            surgery, created, sizes = stage_surgery(state, call.meta, to_prune, selection)
            for track in call.tracks:
                track.size = sizes.get((track.sample, track.image), track.size)
                track.tiles = None  # tiles are read before the first drop only
        self.events.append(
            stage_event(
                stage,
                call.index,
                self.method.name,
                state.padding.shape[0],
                to_prune,
                whole,
                selection,
                created,
            )
        )
        if surgery is None:
            return None
        call.state, new_hidden = rebuild(state, hidden, surgery, compact=self.position_mode == "compact")
        call.stages.append(
            StageRecord(
                first_layer=stage.layer_index,
                padding=call.state.padding,
                dropped=call.state.dropped,
                all_real=call.state.all_real,
            )
        )
        return new_hidden
