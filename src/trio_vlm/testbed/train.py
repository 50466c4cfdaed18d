"""Train the testbed model on CPU: ``python -m trio_vlm.testbed.train --out DIR`` (deterministic, seeded).

Three phases (``codes.py`` explains the split): the language model learns the questions from ideal image
tokens while, in a second process, the vision tower and projector learn to produce those tokens from pixels;
then the joined model is fine-tuned end to end on full 576-token prompts. Writes a stock
``LlavaForConditionalGeneration`` (safetensors), its processor and ``training_log.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import multiprocessing
import platform
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers
from safetensors.torch import load_file, save_file
from tqdm import tqdm
from transformers import GenerationConfig, LlavaForConditionalGeneration

from trio_vlm.testbed.batches import build_batch, conv_mode_for_step
from trio_vlm.testbed.codes import attribute_codes
from trio_vlm.testbed.config import model_config
from trio_vlm.testbed.evaluate import accuracy, accuracy_by_kind, evaluate
from trio_vlm.testbed.generator import EVAL_SEED, TRAIN_SEED, benchmark
from trio_vlm.testbed.objective import (
    AuxHeads,
    LossLayers,
    joint_losses,
    keep_for_language_phase,
    language_losses,
    vision_losses,
)
from trio_vlm.testbed.vocab import build_processor

logger = logging.getLogger(__name__)

VALIDATION_SEED = 2
CHECK_QUESTIONS = 120  # the first held-out questions, re-scored by the test-suite against this log
LOG_NAME = "training_log.json"
VISION_INDEX_OFFSET = 10_000_000  # the vision phase draws its scenes from a separate part of the stream


@dataclass
class TrainSettings:
    """Everything that determines the trained weights (besides the code and the torch build)."""

    language_steps: int = 2600
    language_images: int = 4
    language_background: int = 48  # random background patches kept beside every object patch
    language_lr: float = 2e-3
    vision_steps: int = 3000
    vision_images: int = 4
    vision_lr: float = 2e-3
    joint_steps: int = 400
    joint_images: int = 2
    joint_lr: float = 5e-4
    rounds: int = 3  # questions of every kind per image and step
    warmup: int = 100
    min_lr_ratio: float = 0.05
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    prompt_weight: float = 0.2
    grounding_weight: float = 0.5
    readout_weight: float = 0.5
    named_weight: float = 1.0
    patch_weight: float = 1.0
    summary_weight: float = 1.0
    cls_weight: float = 0.5
    grounding_layers: str = "0,1"
    readout_layers: str = "2,3"
    probe_layer: int = 2
    cls_layers: str = "5,6"
    embed_std: float = 1.0
    init_std: float = 0.02
    seed: int = 0
    parallel: bool = True  # vision phase in a second process, beside the language phase
    threads: int = 1  # per phase process; bitwise equality is promised for the same threads and torch build
    joint_threads: int = 2
    log_every: int = 50
    eval_every: int = 100  # joint-phase validation
    validation_questions: int = 60
    heldout_questions: int = 120
    device: str = "cpu"


def _layers(text: str) -> tuple[int, ...]:
    """``"2,3"`` → ``(2, 3)``."""
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ValueError(f"layer lists must be comma-separated integers, got {text!r}") from None


def loss_layers(settings: TrainSettings) -> LossLayers:
    """The auxiliary losses' layers; a loss with weight 0 is switched off."""
    return LossLayers(
        grounding=_layers(settings.grounding_layers) if settings.grounding_weight else (),
        readout=_layers(settings.readout_layers) if settings.readout_weight else (),
        probe=settings.probe_layer if settings.named_weight else None,
        cls=_layers(settings.cls_layers) if settings.cls_weight else (),
    )


def _total(losses: dict[str, torch.Tensor], settings: TrainSettings) -> torch.Tensor:
    weights = {
        "answer": 1.0,
        "prompt": settings.prompt_weight,
        "grounding": settings.grounding_weight,
        "readout": settings.readout_weight,
        "named": settings.named_weight,
        "patch": settings.patch_weight,
        "summary": settings.summary_weight,
        "cls_attention": settings.cls_weight,
    }
    return sum(weights[k] * v for k, v in losses.items() if k in weights)


def _init_model(settings: TrainSettings) -> tuple[LlavaForConditionalGeneration, AuxHeads]:
    """The seeded initial model (same weights in every process) with a deep-transformer LM init."""
    torch.manual_seed(settings.seed)
    model = LlavaForConditionalGeneration(model_config())
    text = model.model.language_model
    std = settings.init_std / math.sqrt(2 * len(text.layers))
    with torch.no_grad():  # GPT-2 style: unit-variance embeddings, residual writes shrunk by √(2·layers)
        text.embed_tokens.weight.normal_(0.0, settings.embed_std)
        for layer in text.layers:
            layer.self_attn.o_proj.weight.normal_(0.0, std)
            layer.mlp.down_proj.weight.normal_(0.0, std)
    heads = AuxHeads(model.config.text_config.hidden_size, model.config.vision_config.hidden_size)
    return model, heads


def _lr_factor(step: int, steps: int, settings: TrainSettings) -> float:
    """Linear warm-up, then cosine decay to ``min_lr_ratio``."""
    if step < settings.warmup:
        return (step + 1) / settings.warmup
    progress = (step - settings.warmup) / max(1, steps - settings.warmup)
    return settings.min_lr_ratio + (1 - settings.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def _run_phase(
    name: str,
    params: list[torch.nn.Parameter],
    steps: int,
    lr: float,
    settings: TrainSettings,
    step_losses: Callable[[int], dict[str, torch.Tensor]],
    on_log: Callable[[int, dict], None] | None = None,
    progress: bool = True,
) -> list[dict]:
    """AdamW over ``params`` for ``steps`` steps of ``step_losses(step)``; returns the logged history."""
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": settings.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=lr,
        betas=(0.9, 0.98),
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _lr_factor(s, steps, settings))
    history: list[dict] = []
    running: dict[str, float] = {}
    start = time.perf_counter()
    bar = tqdm(range(steps), desc=name, disable=not progress)
    for step in bar:
        losses = step_losses(step)
        _total(losses, settings).backward()
        torch.nn.utils.clip_grad_norm_(params, settings.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        for key, value in losses.items():
            running[key] = running.get(key, 0.0) + float(value.detach())
        done = step + 1
        if done % settings.log_every == 0 or done == steps:
            count = settings.log_every if done % settings.log_every == 0 else done % settings.log_every
            entry = {"phase": name, "step": done, "seconds": round(time.perf_counter() - start, 1)}
            entry.update({k: round(v / count, 4) for k, v in running.items()})
            if on_log is not None:
                on_log(done, entry)
            history.append(entry)
            running = {}
            bar.set_postfix({k: entry[k] for k in ("answer", "accuracy", "patch") if k in entry})
            logger.info("%s", entry)
    return history


def _language_phase(model, heads, settings: TrainSettings, processor) -> list[dict]:
    """The LM, its embeddings, LM head and the ``named`` probe on ideal image tokens."""
    codes = attribute_codes(model.config.text_config.hidden_size)
    layers = dataclasses.replace(loss_layers(settings), cls=())
    generator = torch.Generator().manual_seed(settings.seed + 1)
    n = settings.language_images

    def step_losses(step: int) -> dict[str, torch.Tensor]:
        batch = build_batch(
            processor,
            TRAIN_SEED,
            list(range(step * n, (step + 1) * n)),
            conv_mode_for_step(settings.seed, step),
            settings.rounds,
        )
        keep = keep_for_language_phase(batch, settings.language_background, generator)  # on the CPU
        return language_losses(
            model, heads, batch.to(settings.device), codes, keep.to(settings.device), layers
        )

    params = [
        *model.model.language_model.parameters(),
        *model.lm_head.parameters(),
        *heads.named.parameters(),
    ]
    return _run_phase(
        "language", params, settings.language_steps, settings.language_lr, settings, step_losses
    )


def _vision_phase(model, heads, settings: TrainSettings, processor, progress: bool = True) -> list[dict]:
    """The vision tower, projector and the [CLS] ``summary`` head regress the ideal image tokens."""
    codes = attribute_codes(model.config.text_config.hidden_size)
    layers = loss_layers(settings)
    n = settings.vision_images

    def step_losses(step: int) -> dict[str, torch.Tensor]:
        first = VISION_INDEX_OFFSET + step * n
        batch = build_batch(processor, TRAIN_SEED, list(range(first, first + n)), "llava_hf", rounds=1).to(
            settings.device
        )
        return vision_losses(model, heads, batch, codes, layers)

    inner = model.model
    params = [
        *inner.vision_tower.parameters(),
        *inner.multi_modal_projector.parameters(),
        *heads.summary.parameters(),
    ]
    return _run_phase(
        "vision", params, settings.vision_steps, settings.vision_lr, settings, step_losses, None, progress
    )


def _vision_worker(settings: TrainSettings, out_file: str) -> list[dict]:
    """The vision phase in its own process: same seeded init, trained weights written to ``out_file``."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(settings.threads)
    torch.use_deterministic_algorithms(True, warn_only=settings.device != "cpu")
    model, heads = _init_model(settings)
    model, heads = model.to(settings.device).train(), heads.to(settings.device)
    history = _vision_phase(model, heads, settings, build_processor(), progress=False)
    save_file({k: v.detach().cpu().contiguous() for k, v in _vision_state(model, heads).items()}, out_file)
    return history


def _vision_state(model, heads) -> dict[str, torch.Tensor]:
    """The weights the vision phase trains, by name."""
    inner = model.model
    state = {f"vision_tower.{k}": v for k, v in inner.vision_tower.state_dict().items()}
    state.update(
        {f"multi_modal_projector.{k}": v for k, v in inner.multi_modal_projector.state_dict().items()}
    )
    state.update({f"summary.{k}": v for k, v in heads.summary.state_dict().items()})
    return state


def _load_vision_state(model, heads, state: dict[str, torch.Tensor]) -> None:
    inner = model.model
    for prefix, module in (
        ("vision_tower.", inner.vision_tower),
        ("multi_modal_projector.", inner.multi_modal_projector),
        ("summary.", heads.summary),
    ):
        part = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        module.load_state_dict(part)


def _validate(model: LlavaForConditionalGeneration, processor, examples: list) -> float:
    model.eval()
    acc = accuracy(evaluate(model, processor, examples, progress=False))
    model.train()
    return acc


def train(settings: TrainSettings, out_dir: Path) -> dict:
    """Train from scratch, save the model, processor and log to ``out_dir``; return the log."""
    torch.set_num_threads(settings.threads)
    # CUDA lacks deterministic kernels for a few backward ops: warn there instead of failing.
    torch.use_deterministic_algorithms(True, warn_only=settings.device != "cpu")
    processor = build_processor()
    model, heads = _init_model(settings)
    model, heads = model.to(settings.device).train(), heads.to(settings.device)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        vision_file = str(Path(tmp) / "vision.safetensors")
        if settings.parallel:
            context = multiprocessing.get_context("spawn")
            with context.Pool(1) as pool:
                pending = pool.apply_async(_vision_worker, (settings, vision_file))
                history = _language_phase(model, heads, settings, processor)
                history += pending.get()
            _load_vision_state(model, heads, load_file(vision_file, device=str(settings.device)))
        else:
            history = _language_phase(model, heads, settings, processor)
            history += _vision_phase(model, heads, settings, processor)
    split_seconds = time.perf_counter() - start
    torch.set_num_threads(settings.joint_threads)
    history += _joint_phase(model, heads, settings, processor)
    train_seconds = time.perf_counter() - start
    model = model.to("cpu").eval()
    heldout = evaluate(
        model, processor, benchmark(settings.heldout_questions, seed=EVAL_SEED), progress=False
    )
    log = {
        "settings": dataclasses.asdict(settings),
        "train_seconds": round(train_seconds, 1),
        "split_phase_seconds": round(split_seconds, 1),
        "heldout": {
            "seed": EVAL_SEED,
            "questions": settings.heldout_questions,
            "vanilla_accuracy": accuracy(heldout),
            "by_kind": accuracy_by_kind(heldout),
            "check_questions": min(CHECK_QUESTIONS, len(heldout)),
            "check_accuracy": accuracy(heldout[:CHECK_QUESTIONS]),
        },
        "history": history,
        "environment": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpu_threads": [settings.threads, settings.joint_threads],
        },
    }
    save(model, processor, log, out_dir)
    return log


def _joint_phase(model, heads, settings: TrainSettings, processor) -> list[dict]:
    """Every weight on full 576-token prompts, validated every ``eval_every`` steps."""
    codes = attribute_codes(model.config.text_config.hidden_size)
    layers = loss_layers(settings)
    validation = benchmark(settings.validation_questions, seed=VALIDATION_SEED)
    n = settings.joint_images
    first = 2 * VISION_INDEX_OFFSET

    def step_losses(step: int) -> dict[str, torch.Tensor]:
        indices = list(range(first + step * n, first + (step + 1) * n))
        batch = build_batch(
            processor, TRAIN_SEED, indices, conv_mode_for_step(settings.seed, step), settings.rounds
        ).to(settings.device)
        return joint_losses(model, heads, batch, codes, layers)

    def on_log(done: int, entry: dict) -> None:
        if done % settings.eval_every == 0 or done == settings.joint_steps:
            entry["validation_accuracy"] = _validate(model, processor, validation)

    if settings.joint_steps == 0:
        return [{"phase": "joint", "step": 0, "validation_accuracy": _validate(model, processor, validation)}]
    params = [*model.parameters(), *heads.parameters()]
    return _run_phase("joint", params, settings.joint_steps, settings.joint_lr, settings, step_losses, on_log)


def save(model: LlavaForConditionalGeneration, processor, log: dict, out_dir: Path) -> None:
    """Write the checkpoint (safetensors), the processor files and the training log."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model.generation_config = GenerationConfig(bos_token_id=1, eos_token_id=2, pad_token_id=0)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    (out_dir / LOG_NAME).write_text(json.dumps(log, indent=1) + "\n")
    logger.info("saved the testbed model to %s", out_dir)


def _flag(text: str) -> bool:
    if text.lower() in ("1", "true", "yes"):
        return True
    if text.lower() in ("0", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; every :class:`TrainSettings` field is an option."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    for f in dataclasses.fields(TrainSettings):
        kind = _flag if isinstance(f.default, bool) else type(f.default)
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=kind, default=f.default)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = TrainSettings(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainSettings)})
    log = train(settings, args.out)
    print(json.dumps({"train_seconds": log["train_seconds"], "heldout": log["heldout"]}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
