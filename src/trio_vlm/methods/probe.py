"""TRIO's saliency probe (TRIO.md §2): gradient of a layer-local proxy loss w.r.t. the hidden states.

Loss: cross-entropy of next-layer logits against their own argmax over the last ``k_positions`` positions
(reference: positions last-1-t for t < K, i.e. S-5..S-2 without padding — a label-shift artefact; option
``include_last`` uses last-t). Samples' losses are averaged over their positions and summed over the batch,
so a sample's saliency does not depend on what else is in the batch (the reference runs batch size 1, where
this is the same loss).
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)


def loss_positions(
    last_valid: torch.Tensor, k_positions: int, include_last: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, K) query positions and (B, K) weights; duplicates (very short prompts) get weight 0 and the rest
    1/count, like the reference's boolean position mask."""
    offset = 0 if include_last else 1
    steps = torch.arange(k_positions, device=last_valid.device)
    pos = (last_valid[:, None] - offset - steps[None, :]).clamp(min=0)
    first = torch.ones_like(pos, dtype=torch.bool)
    first[:, 1:] = pos[:, 1:] != pos[:, :-1]  # positions are non-increasing, so duplicates are adjacent
    weights = first.float() / first.sum(1, keepdim=True).float()
    return pos, weights


def _pseudo_label_loss(logits: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    logits = logits.float()
    labels = logits.detach().argmax(-1)
    ce = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="none").view(labels.shape)
    return (ce * weights).sum()


def _grad_norm(loss: torch.Tensor, h: torch.Tensor, loss_scale: float) -> torch.Tensor:
    (grad,) = torch.autograd.grad(loss * loss_scale, h)
    return grad.float().norm(dim=-1) / loss_scale


def _probe_input(hidden: torch.Tensor) -> torch.Tensor:
    return hidden.detach().clone().requires_grad_(True)


def _default_scale(dtype: torch.dtype) -> float:
    # fp16 gradients underflow at these magnitudes; bf16 shares fp32's exponent range.
    return 1024.0 if dtype == torch.float16 else 1.0


def reference_saliency(
    adapter: Any,
    layer_index: int,
    hidden: torch.Tensor,
    layer_kwargs: dict[str, Any],
    last_valid: torch.Tensor,
    k_positions: int = 4,
    include_last: bool = False,
    head: torch.nn.Module | None = None,
) -> torch.Tensor:
    """(B, S) saliency the reference way: full next layer, final norm and LM head over every position.

    ``head``: the output head's module (its ``weight``, and ``bias`` if any); ``None``: the model's LM head."""
    with torch.inference_mode(False), torch.enable_grad():
        # tensors made under an outer inference_mode cannot take part in autograd: clone them out of it
        pos, weights = loss_positions(last_valid.clone(), k_positions, include_last)
        kwargs = {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in layer_kwargs.items()}
        if isinstance(kwargs.get("position_embeddings"), tuple):
            kwargs["position_embeddings"] = tuple(t.clone() for t in kwargs["position_embeddings"])
        h = _probe_input(hidden)
        out = adapter.run_layer(layer_index, h, kwargs)
        if head is None:
            logits = adapter.logits(out)  # (B, S, V): what the fast probe avoids
        else:
            logits = F.linear(adapter.final_norm(out), head.weight, getattr(head, "bias", None))
        picked = logits.gather(1, pos[..., None].expand(-1, -1, logits.shape[-1]))
        loss = _pseudo_label_loss(picked, weights)
        return _grad_norm(loss, h, _default_scale(hidden.dtype))


def head_gradient(head: torch.nn.Module, z: torch.Tensor, weights: torch.Tensor, chunk: int) -> torch.Tensor:
    """∂/∂z of ``Σ w · CE(head(z), argmax head(z))`` for rows ``z`` (R, D), reading the head's weight once.

    The cross-entropy gradient is ``W^T (softmax(l) - onehot(argmax l))``. Sweeping the vocabulary in chunks
    with an online softmax (running max, rescaled sum and rescaled ``Σ exp(l_v) W_v``, as flash attention does)
    forms it in the same pass that computes the logits; autograd would read the head twice (forward and
    backward), and for a few rows those skinny products are memory-bound. Computed in float32.
    """
    weight = head.weight
    bias = getattr(head, "bias", None)
    z32 = z.float()
    rows = z32.shape[0]
    running_max = torch.full((rows,), float("-inf"), device=z.device)
    total = torch.zeros(rows, device=z.device)
    acc = torch.zeros(rows, z.shape[-1], device=z.device)
    best = torch.full((rows,), float("-inf"), device=z.device)
    label = torch.zeros(rows, dtype=torch.long, device=z.device)
    for start in range(0, weight.shape[0], chunk):
        w_c = weight[start : start + chunk].float()
        logits = z32 @ w_c.T
        if bias is not None:
            logits = logits + bias[start : start + chunk].float()
        c_max, c_arg = logits.max(dim=1)
        better = c_max > best  # strict: ties keep the earliest index, as argmax does
        best = torch.where(better, c_max, best)
        label = torch.where(better, c_arg + start, label)
        new_max = torch.maximum(running_max, c_max)
        scale = torch.exp(running_max - new_max)
        e = torch.exp(logits - new_max[:, None])
        total = total * scale + e.sum(1)
        acc = acc * scale[:, None] + e @ w_c
        running_max = new_max
    return weights[:, None] * (acc / total[:, None] - weight[label].float())


def _head_chunk(device: torch.device, vocab: int, width: int) -> int:
    # On a CPU the head is read from RAM: chunks of about 2 MiB in float32 stay in cache for the second product
    # (measured on the 2-core build machine, width 1024: 40 ms at 512 rows, 44 ms at 1024, 59 ms unchunked).
    # On a GPU one chunk (two large products) avoids launching many small kernels.
    return max(64, (2 << 20) // (4 * width)) if device.type == "cpu" else vocab


def _fast_probe(
    adapter: Any,
    layer_index: int,
    head: torch.nn.Module,
    k_positions: int,
    include_last: bool,
    scale: float,
    hidden: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    padding: torch.Tensor,
    last_valid: torch.Tensor,
) -> torch.Tensor:
    """The fast probe as one pure function of tensors (``torch.func.vjp``, no autograd tape), so that
    ``torch.compile`` can capture it whole; :func:`fast_saliency` runs it eagerly or compiled."""
    pos, weights = loss_positions(last_valid, k_positions, include_last)
    index = pos.unsqueeze(-1).expand(-1, -1, hidden.shape[-1])

    def rows_after_norm(h: torch.Tensor, h_rows: torch.Tensor) -> torch.Tensor:
        out = adapter.layer_rows(layer_index, h, pos, cos, sin, padding, h_rows)
        return adapter.final_norm(out)  # (B, K, D)

    # the loss rows enter twice (keys and values of every token; queries and residual of K rows): two inputs,
    # so their small gradient is added in place instead of autograd scattering a (B, S, D) one
    z, pull_back = torch.func.vjp(rows_after_norm, hidden, hidden.gather(1, index))
    flat = z.detach().reshape(-1, z.shape[-1])
    grad_z = head_gradient(
        head, flat, weights.reshape(-1), _head_chunk(z.device, head.weight.shape[0], z.shape[-1])
    )
    grad, grad_rows = pull_back((grad_z * scale).view_as(z).to(z.dtype))
    grad = grad.scatter_add(1, index, grad_rows)  # duplicate rows (very short prompts) add up, as autograd's
    return grad.float().norm(dim=-1) / scale


#: Compiled probes by (model, layer, head, loss settings, backend, input shapes/dtypes/device).
_COMPILED: dict[tuple, Any] = {}
_FAILED: set[tuple] = set()


def compile_backend(mode: str, device: torch.device) -> tuple[str, str | None] | None:
    """``(backend, torch.compile mode)`` for a probe ``mode``: ``"auto"`` = inductor with CUDA graphs on a GPU,
    eager elsewhere (compiling for a CPU costs more than it saves in one call); a backend name forces it."""
    if mode == "off":
        return None
    if mode == "auto":
        return ("inductor", "reduce-overhead") if device.type == "cuda" else None
    return (mode, "reduce-overhead" if mode == "inductor" and device.type == "cuda" else None)


def _compiled_probe(adapter: Any, key: tuple, backend: str, mode: str | None, function: Any) -> Any:
    if key not in _COMPILED:
        _COMPILED[key] = torch.compile(function, fullgraph=True, dynamic=False, backend=backend, mode=mode)
    return _COMPILED[key]


def fast_saliency(
    adapter: Any,
    layer_index: int,
    hidden: torch.Tensor,
    layer_kwargs: dict[str, Any],
    last_valid: torch.Tensor,
    padding: torch.Tensor,
    k_positions: int = 4,
    include_last: bool = False,
    head: torch.nn.Module | None = None,
    compile_mode: str = "off",
) -> torch.Tensor:
    """(B, S) saliency equal to :func:`reference_saliency`, computing the layer only at the K loss rows.

    Attention is causal and only K positions enter the loss, so a visual token's gradient flows solely through
    its key and value: the probe needs the input norm and key projections for all tokens, the rest of the layer
    for K rows only, and the LM head's gradient for K rows in one pass over its weight (:func:`head_gradient`).

    ``compile_mode`` (TRIO's ``probe_compile``): ``"off"`` runs it eagerly; ``"auto"`` captures it with
    ``torch.compile`` + CUDA graphs on a GPU (static shapes: one capture per prompt shape) and runs eagerly
    elsewhere; a backend name (``"inductor"``, ``"aot_eager"``…) forces that backend. A capture that fails falls
    back to the eager path with one warning. Both give the same saliency (tested).
    """
    cos, sin = layer_kwargs["position_embeddings"]
    head = adapter.lm_head if head is None else head
    scale = _default_scale(hidden.dtype)
    args = (adapter, layer_index, head, k_positions, include_last, scale)
    with torch.inference_mode(False), torch.enable_grad():
        # tensors made under an outer inference_mode cannot take part in autograd: clone them out of it
        tensors = tuple(t.clone() for t in (hidden.detach(), cos, sin, padding, last_valid))
        choice = compile_backend(compile_mode, hidden.device)
        if choice is not None:
            shapes = tuple((tuple(t.shape), t.dtype, str(t.device)) for t in tensors)
            key = (id(adapter.model), layer_index, id(head), k_positions, include_last, *choice, shapes)
            if key not in _FAILED:
                function = functools.partial(_fast_probe, *args)
                try:
                    return _compiled_probe(adapter, key, *choice, function)(*tensors)
                except Exception as exc:  # noqa: BLE001 - any capture failure falls back to the eager path
                    _FAILED.add(key)
                    logger.warning(
                        "compiling TRIO's probe with %s failed (%s); running it eagerly", choice[0], exc
                    )
        return _fast_probe(*args, *tensors)
