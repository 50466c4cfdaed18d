"""Measure one generate call: device-synchronised prefill and total time, tokens per layer, FLOPs, KV cache."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from trio_vlm.adapters import adapter_for
from trio_vlm.api import apply
from trio_vlm.methods.base import TokenMethod
from trio_vlm.methods.fixed import Vanilla
from trio_vlm.profiling.flops import LMShape, prefill_flops, probe_flops


@dataclass
class RunProfile:
    """Efficiency figures of one generate call (first sample of the batch for per-layer figures)."""

    method: str
    prefill_s: float
    total_s: float
    new_tokens: int
    tokens_per_layer: list[int]
    visual_per_layer: list[int]
    flops_fastv: float
    flops_exact: float
    probe_flops: float
    kv_bytes: int
    peak_memory_bytes: int | None
    events: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _kv_bytes_after_prefill(adapter, cache: Any, decoded: int) -> int:
    lengths = adapter.cache_layer_lengths(cache)
    per_token = adapter.cache_layer_bytes_per_token(cache)
    return int(sum(max(n - decoded, 0) * b for n, b in zip(lengths, per_token)))


def profile_generate(
    model: nn.Module,
    inputs: dict[str, torch.Tensor],
    method: TokenMethod | None,
    max_new_tokens: int = 8,
    warmup: int = 1,
) -> RunProfile:
    """Run ``generate`` ``warmup`` times unmeasured, then once measured, under ``method`` (``None``: vanilla).

    The KV cache is read off the cache object the call returns: bytes held per layer after prefill (decode
    entries subtracted). Peak memory is the device's allocator peak (CUDA only; ``None`` on CPU).
    """
    method = method or Vanilla()
    adapter = adapter_for(model)
    device = next(model.parameters()).device
    gen = {"max_new_tokens": max_new_tokens, "do_sample": False, "return_dict_in_generate": True}
    if model.generation_config.pad_token_id is None:
        gen["pad_token_id"] = model.generation_config.eos_token_id
    for _ in range(warmup):
        with torch.no_grad(), apply(model, method):
            model.generate(**inputs, **gen)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    _sync(device)
    start = time.perf_counter()
    with torch.no_grad(), apply(model, method) as run:
        out = model.generate(**inputs, **gen)
    _sync(device)
    total = time.perf_counter() - start
    prompt = inputs["input_ids"].shape[1]
    new_tokens = int(out.sequences.shape[1] - prompt)
    cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
    kv = _kv_bytes_after_prefill(adapter, cache, max(new_tokens - 1, 0))

    shape = LMShape.from_config(model.config.text_config)
    mask = inputs.get("attention_mask")
    prompt_len = int(mask[0].sum()) if mask is not None else prompt
    visual_per_layer = run.tokens_per_layer(0, 0)  # measured; structural tokens (NeXT row newlines) excluded
    other = prompt_len - run.calls[0].visual_tokens[0]  # text and structural tokens, never pruned
    per_layer = [other + v for v in visual_per_layer]
    probe = 0.0
    probe_kind = getattr(method, "probe", None)
    if probe_kind in ("fast", "reference"):
        for e in run.events:
            if not e.stage.is_encoder and e.scores[0] is not None:
                probe += probe_flops(other + e.tokens_before[0], shape, method.k_positions, probe_kind)
    return RunProfile(
        method=method.name,
        prefill_s=run.prefill_seconds[0],
        total_s=total,
        new_tokens=new_tokens,
        tokens_per_layer=per_layer,
        visual_per_layer=visual_per_layer,
        flops_fastv=prefill_flops(per_layer, shape, "fastv"),
        flops_exact=prefill_flops(per_layer, shape, "exact"),
        probe_flops=probe,
        kv_bytes=kv,
        peak_memory_bytes=torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None,
        events=[
            {
                "stage": e.stage.key,
                "layer_index": e.layer_index,
                "before": e.tokens_before,
                "after": e.tokens_after,
            }
            for e in run.events
        ],
    )


def summarise(profiles: list[RunProfile]) -> dict[str, float]:
    """Sums over runs, in the paper's units (seconds, TFLOPs, MB)."""
    return {
        "runs": len(profiles),
        "prefill_s": sum(p.prefill_s for p in profiles),
        "total_s": sum(p.total_s for p in profiles),
        "tflops_fastv": sum(p.flops_fastv for p in profiles) / 1e12,
        "tflops_exact": sum(p.flops_exact for p in profiles) / 1e12,
        "probe_tflops": sum(p.probe_flops for p in profiles) / 1e12,
        "kv_mb": sum(p.kv_bytes for p in profiles) / 2**20,
        "mean_visual_tokens": sum(sum(p.visual_per_layer) / len(p.visual_per_layer) for p in profiles)
        / max(len(profiles), 1),
    }
