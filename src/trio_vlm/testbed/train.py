"""Train the testbed model on CPU: ``python -m trio_vlm.testbed.train --out DIR`` (deterministic, seeded).

Writes a stock ``LlavaForConditionalGeneration`` (safetensors), its processor and ``training_log.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers
from tqdm import tqdm
from transformers import GenerationConfig, LlavaForConditionalGeneration

from trio_vlm.testbed.batches import Batch, build_batch, conv_mode_for_step
from trio_vlm.testbed.config import model_config
from trio_vlm.testbed.evaluate import accuracy, accuracy_by_kind, evaluate
from trio_vlm.testbed.generator import EVAL_SEED, TRAIN_SEED, benchmark
from trio_vlm.testbed.objective import AuxHeads, compute_losses
from trio_vlm.testbed.vocab import build_processor

logger = logging.getLogger(__name__)

VALIDATION_SEED = 2
CHECK_QUESTIONS = 120  # the first held-out questions, re-scored by the test-suite against this log
LOG_NAME = "training_log.json"


@dataclass
class TrainSettings:
    """Everything that determines the trained weights (besides the code and the torch build)."""

    steps: int = 1200
    images_per_step: int = 2
    rounds: int = 3
    lr: float = 1e-3
    warmup: int = 100
    min_lr_ratio: float = 0.05
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    prompt_weight: float = 0.2
    aux_weight: float = 1.0
    # Auxiliary attention losses: the answer position's attention in these decoder layers is pointed at the
    # asked object's patches, and [CLS]'s attention in these vision layers at all objects (CLIP-like).
    evidence_weight: float = 0.5
    evidence_layers: str = "2,3,4,5"
    cls_weight: float = 0.5
    cls_layers: str = "5,6"
    grounding_weight: float = 0.5
    grounding_layers: str = "0,1"
    # Curriculum: up to this fraction of the steps, scenes hold at most this many shapes (then 5-8). Without
    # it the model has to find the asked object among 576 tokens before any answer is right, and stalls at
    # the answer prior for hundreds of steps.
    curriculum: str = "0.2:1,0.35:2,0.5:4"
    embed_std: float = 1.0
    init_std: float = 0.02
    seed: int = 0
    threads: int = 1  # 2 threads thrash on shared cores (10x slower measured); 1 is also what the log records
    log_every: int = 50
    eval_every: int = 500
    validation_questions: int = 60
    heldout_questions: int = 120
    device: str = "cpu"
    workers: int = 0
    max_seconds: float = 0.0  # stop early after this much training time (0: never); the log says so


def _layers(text: str) -> tuple[int, ...]:
    """``"2,3"`` → ``(2, 3)``."""
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ValueError(f"layer lists must be comma-separated integers, got {text!r}") from None


def _scale_init(model: LlavaForConditionalGeneration, settings: TrainSettings) -> None:
    """Deep-transformer initialisation (GPT-2 style): unit-variance token embeddings and residual-writing
    projections shrunk by √(2·layers), so the randomly initialised 16-layer LM starts close to the identity
    and the image evidence is not drowned by random layer outputs (with the stock init training stalls at the
    answer prior)."""
    text = model.model.language_model
    std = settings.init_std / math.sqrt(2 * len(text.layers))
    with torch.no_grad():
        text.embed_tokens.weight.normal_(0.0, settings.embed_std)
        for layer in text.layers:
            layer.self_attn.o_proj.weight.normal_(0.0, std)
            layer.mlp.down_proj.weight.normal_(0.0, std)


def _lr_factor(step: int, settings: TrainSettings) -> float:
    """Linear warm-up, then cosine decay to ``min_lr_ratio``."""
    if step < settings.warmup:
        return (step + 1) / settings.warmup
    progress = (step - settings.warmup) / max(1, settings.steps - settings.warmup)
    return settings.min_lr_ratio + (1 - settings.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def _optimizer(params: list[torch.nn.Parameter], settings: TrainSettings) -> torch.optim.Optimizer:
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": settings.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=settings.lr, betas=(0.9, 0.98))


class _Steps(torch.utils.data.Dataset):
    """Training batch ``step`` (a pure function of the step, so worker processes change nothing)."""

    def __init__(self, settings: TrainSettings) -> None:
        self.settings = settings
        self.processor = build_processor()

    def __len__(self) -> int:
        return self.settings.steps

    def __getitem__(self, step: int) -> Batch:
        s = self.settings
        indices = list(range(step * s.images_per_step, (step + 1) * s.images_per_step))
        return build_batch(
            self.processor,
            TRAIN_SEED,
            indices,
            conv_mode_for_step(s.seed, step),
            s.rounds,
            max_shapes=curriculum_shapes(s.curriculum, step / s.steps),
        )


def curriculum_shapes(spec: str, progress: float) -> int | None:
    """Most shapes per scene at ``progress`` (fraction of training done) under ``"frac:shapes,..."``;
    ``None`` (the full 5-8) after the last stage."""
    for part in spec.split(","):
        if not part.strip():
            continue
        try:
            until, shapes = part.split(":")
            if progress < float(until):
                return int(shapes)
        except ValueError:
            raise ValueError(f"curriculum must look like '0.2:1,0.35:2', got {spec!r}") from None
    return None


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
    torch.manual_seed(settings.seed)
    processor = build_processor()
    model = LlavaForConditionalGeneration(model_config())
    _scale_init(model, settings)
    model = model.to(settings.device).train()
    heads = AuxHeads(model.config.text_config.hidden_size, model.config.vision_config.hidden_size)
    heads = heads.to(settings.device)
    params = [*model.parameters(), *heads.parameters()]
    optimizer = _optimizer(params, settings)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _lr_factor(s, settings))
    validation = benchmark(settings.validation_questions, seed=VALIDATION_SEED)
    layers = _layers(settings.evidence_layers) if settings.evidence_weight else ()
    cls_layers = _layers(settings.cls_layers) if settings.cls_weight else ()
    grounding_layers = _layers(settings.grounding_layers) if settings.grounding_weight else ()
    history: list[dict] = []
    running: dict[str, float] = {}
    done, questions_per_image = 0, 0
    start = time.perf_counter()
    loader = torch.utils.data.DataLoader(
        _Steps(settings), batch_size=None, shuffle=False, num_workers=settings.workers
    )
    bar = tqdm(loader, desc="train", total=settings.steps)
    for step, cpu_batch in enumerate(bar):
        if settings.max_seconds and time.perf_counter() - start > settings.max_seconds:
            logger.warning("stopping at step %d: max_seconds=%s reached", step, settings.max_seconds)
            break
        batch = cpu_batch.to(settings.device)
        questions_per_image = batch.questions_per_image
        losses = compute_losses(model, heads, batch, layers, cls_layers, grounding_layers)
        total = (
            losses["answer"]
            + settings.prompt_weight * losses["prompt"]
            + settings.aux_weight * (losses["patch"] + losses["summary"])
            + settings.evidence_weight * losses.get("evidence", torch.zeros(()))
            + settings.cls_weight * losses.get("cls_attention", torch.zeros(()))
            + settings.grounding_weight * losses.get("grounding", torch.zeros(()))
        )
        total.backward()
        torch.nn.utils.clip_grad_norm_(params, settings.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        for key, value in losses.items():
            running[key] = running.get(key, 0.0) + float(value.detach())
        done = step + 1
        if done % settings.log_every == 0 or done == settings.steps:
            entry = {"step": done, "seconds": round(time.perf_counter() - start, 1)}
            entry.update({k: round(v / settings.log_every, 4) for k, v in running.items()})
            entry["lr"] = scheduler.get_last_lr()[0]
            if done % settings.eval_every == 0 or done == settings.steps:
                entry["validation_accuracy"] = _validate(model, processor, validation)
            history.append(entry)
            running = {}
            bar.set_postfix(answer=entry["answer"], acc=entry["accuracy"])
            logger.info("%s", entry)
    train_seconds = time.perf_counter() - start
    model = model.to("cpu").eval()
    heldout = evaluate(
        model, processor, benchmark(settings.heldout_questions, seed=EVAL_SEED), progress=False
    )
    log = {
        "settings": dataclasses.asdict(settings),
        "train_seconds": round(train_seconds, 1),
        "steps_run": done,
        "questions_seen": done * settings.images_per_step * questions_per_image,
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
        },
    }
    save(model, processor, log, out_dir)
    return log


def save(model: LlavaForConditionalGeneration, processor, log: dict, out_dir: Path) -> None:
    """Write the checkpoint (safetensors), the processor files and the training log."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model.generation_config = GenerationConfig(bos_token_id=1, eos_token_id=2, pad_token_id=0)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    (out_dir / LOG_NAME).write_text(json.dumps(log, indent=1) + "\n")
    logger.info("saved the testbed model to %s", out_dir)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; every :class:`TrainSettings` field is an option."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    for f in dataclasses.fields(TrainSettings):
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=f.default)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = TrainSettings(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainSettings)})
    log = train(settings, args.out)
    print(json.dumps({"train_seconds": log["train_seconds"], "heldout": log["heldout"]}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
