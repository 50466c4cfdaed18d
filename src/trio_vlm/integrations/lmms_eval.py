"""lmms-eval model plugin: ``lmms-eval --model trio_vlm --model_args pretrained=…,method=trio,budget=64``.

Installed with ``pip install 'trio-vlm[lmms]'``; lmms-eval (0.7) finds the models through the
``lmms_eval.models`` entry point, which returns :func:`manifests`: ``trio_vlm`` takes any supported checkpoint
(the family is read from its config), ``trio_llava``, ``trio_llava_next`` and ``trio_qwen2_5_vl`` take only
their family's. Model args are the CLI's method options (``method``, ``budget``, ``mode``, ``layer_list``,
``image_token_list``, ``visual_token_num``, ``image_token_ratio``, ``image_token_ratio_list``,
``reference_quirks``), ``conv_mode``,
``pad_square``, ``device``, ``dtype``, ``device_map``, ``max_new_tokens`` and lmms-eval's ``batch_size``.

Several processes (``accelerate launch`` / ``torchrun``): lmms-eval splits the documents by rank; each process
loads its own model (``device=cuda`` becomes ``cuda:$LOCAL_RANK``) and exposes ``rank``, ``world_size`` and
``device`` as lmms-eval's evaluator expects.

The class also works without lmms-eval installed (it then derives from a minimal stand-in base). Note:
lmms-eval's task definitions differ from LLaVA's scripts (POPE scored by whole-answer equality, TextVQA
without OCR tokens), so its numbers are not the paper's; ``trio-vlm eval`` is the reference path.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import logging
import os
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

import torch
from PIL import Image
from tqdm import tqdm

from trio_vlm.eval.reading.images import prepare_image, resolve_pad_square, square_fill
from trio_vlm.eval.sharding import world_from_env
from trio_vlm.generation import generate_answers, generation_kwargs
from trio_vlm.loading import load_model_and_processor, model_shape
from trio_vlm.method_options import SCHEDULE_OPTIONS, as_bool, method_request_from
from trio_vlm.prompts import check_conv_mode, prompt_for, resolve_conv_mode

logger = logging.getLogger(__name__)

#: lmms-eval releases this plugin is tested with (the ``[lmms]`` extra pins the same range).
TESTED_LMMS_EVAL = ("0.7.3", "0.8")

try:  # pragma: no cover - exercised only where lmms-eval is installed
    from lmms_eval.api.model import lmms as _Base
except ImportError:

    class _Base:  # type: ignore[no-redef]
        """Stand-in for ``lmms_eval.api.model.lmms`` when lmms-eval is not installed."""

        is_simple = True

        def __init__(self) -> None:
            self._rank, self._world_size = 0, 1
            self.task_dict: dict[str, Any] = {}

        @property
        def rank(self) -> int:
            return self._rank

        @property
        def world_size(self) -> int:
            return self._world_size


def _version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for part in text.split(".")[:3]:
        digits = "".join(c for c in part if c.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def install_problems(
    find_spec: Callable[[str], Any] = importlib.util.find_spec,
    version: Callable[[str], str] = importlib.metadata.version,
) -> list[str]:
    """What is wrong with the installed lmms-eval for this plugin (empty: nothing, or lmms-eval absent).

    lmms-eval 0.7.3 imports ``filelock._api`` when it starts evaluating, which filelock 4 removed: the run
    then dies after the model loaded and the command still exits 0."""
    if find_spec("lmms_eval") is None:
        return []
    problems = []
    lmms_version = version("lmms-eval")
    low, high = TESTED_LMMS_EVAL
    if not _version_tuple(low) <= _version_tuple(lmms_version) < _version_tuple(high):
        problems.append(f"lmms-eval {lmms_version} is untested (tested: >={low},<{high})")
    try:
        missing = find_spec("filelock._api") is None
    except ModuleNotFoundError:
        missing = True
    if missing:
        problems.append(
            f"filelock {version('filelock') if find_spec('filelock') else '(missing)'} has no filelock._api, "
            "which lmms-eval 0.7 imports (filelock 4 removed it)"
        )
    return problems


def check_install(**kwargs: Any) -> None:
    """``ImportError`` naming every problem of the lmms-eval install and the command that fixes it."""
    problems = install_problems(**kwargs)
    if problems:
        raise ImportError(
            "broken lmms-eval install for trio-vlm: "
            + "; ".join(problems)
            + ". Fix: pip install 'lmms-eval>=0.7.3,<0.8' 'filelock<4' (what the trio-vlm[lmms] extra asks for)"
        )


def _as_bool_or_auto(value: Any, name: str) -> bool | None:
    """``True``/``False`` (also as text), or ``None`` for ``auto``."""
    if value is None or str(value).strip().lower() == "auto":
        return None
    try:
        return as_bool(value, name)
    except ValueError:
        raise ValueError(f"{name} must be true, false or auto, got {value!r}") from None


def _positive_int(value: Any, name: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive integer, got {value!r}") from None
    if number < 1 or isinstance(value, bool):
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return number


def _flatten(visuals: Any) -> list[Any]:
    if visuals is None:
        return []
    if isinstance(visuals, Image.Image) or not isinstance(visuals, Iterable) or isinstance(visuals, str):
        return [visuals]
    return [v for item in visuals for v in _flatten(item)]


def _cut_at_stop(text: str, until: Any) -> str:
    """The answer up to the first stop string (lmms-eval's ``until``)."""
    stops = [until] if isinstance(until, str) else list(until or [])
    for stop in stops:
        if stop and stop in text:
            text = text[: text.index(stop)]
    return text


def _default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


class TrioVLM(_Base):
    """Any supported checkpoint (LLaVA-1.5, LLaVA-NeXT, Qwen2.5-VL) pruned by any registered trio-vlm method
    (``method=vanilla``: unpruned), with its family's prompt format and image preparation by default."""

    is_simple = True
    #: The family this model name accepts (``None``: any, read from the checkpoint).
    family: ClassVar[str | None] = None
    model_name: ClassVar[str] = "trio_vlm"

    def __init__(
        self,
        pretrained: str | None = None,
        method: str = "trio",
        budget: int | str | None = None,
        mode: str | None = None,
        layer_list: Any = None,
        image_token_list: Any = None,
        visual_token_num: Any = None,
        image_token_ratio: Any = None,
        image_token_ratio_list: Any = None,
        reference_quirks: bool | str = False,
        device: str | None = None,
        dtype: str = "auto",
        device_map: str | None = None,
        conv_mode: str = "auto",
        pad_square: bool | str | None = "auto",
        max_new_tokens: int | str = 1024,
        batch_size: int | str = 1,
        max_batch_size: Any = None,  # lmms-eval passes it to every model; batches are batch_size
        **unexpected: Any,
    ) -> None:
        super().__init__()
        check_install()
        if unexpected:
            raise ValueError(f"unexpected {self.model_name} model args: {', '.join(sorted(unexpected))}")
        schedule = dict(
            zip(
                SCHEDULE_OPTIONS,
                (layer_list, image_token_list, visual_token_num, image_token_ratio, image_token_ratio_list),
            )
        )
        self.request = method_request_from(
            str(method), budget, mode, reference_quirks=reference_quirks, flag=str, **schedule
        )
        self.batch_size = _positive_int(batch_size, "batch_size")
        self.max_new_tokens = _positive_int(max_new_tokens, "max_new_tokens")
        check_conv_mode(str(conv_mode))
        pad = _as_bool_or_auto(pad_square, "pad_square")
        world, rank = world_from_env()
        self._rank, self._world_size = rank, world
        device = device or _default_device()
        if world > 1 and device == "cuda" and not device_map:
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        if pretrained is None:
            from trio_vlm.bundled import default_model_dir

            pretrained = str(default_model_dir())
        shape = model_shape(pretrained)
        if self.family is not None and shape.family != self.family:
            raise ValueError(
                f"{self.model_name} takes {self.family} checkpoints; {pretrained} is {shape.family} "
                f"(use --model {MODEL_NAMES[shape.family]} or trio_vlm)"
            )
        self.shape = shape
        self.method = self.request.build(shape)
        self._model, self.processor = load_model_and_processor(
            pretrained, device, dtype, device_map=device_map or None
        )
        self.conv_mode = resolve_conv_mode(str(conv_mode), shape.family)
        self.pad_square = resolve_pad_square(pad, shape.family)
        self._fill = square_fill(self.processor, self.pad_square)
        logger.info(
            "%s: %s (%s), %s, conv mode %s, pad %s, batch %d",
            self.model_name,
            pretrained,
            shape.family,
            self.method.describe(),
            self.conv_mode,
            self.pad_square,
            self.batch_size,
        )

    @property
    def model(self) -> Any:
        return self._model

    @property
    def device(self) -> torch.device:
        """Where inputs go (the first device of a model spread by ``device_map``)."""
        return self._model.device

    def _prompt(self, context: str, visuals: list[Any]) -> tuple[Image.Image | None, str]:
        images = [v for v in visuals if isinstance(v, Image.Image)]
        if len(images) < len(visuals):
            raise ValueError(f"{self.model_name} handles images only (no video or audio inputs)")
        if len(images) > 1:
            logger.warning("one image per prompt is supported; using the first of %d", len(images))
        question = context.replace("<image>", "").strip()
        if not images:
            return None, prompt_for(question, self.conv_mode, self.processor, image=False)
        image = prepare_image(images[0].convert("RGB"), self._fill)
        return image, prompt_for(question, self.conv_mode, self.processor)

    def _generate(self, prompts: list[tuple[Image.Image | None, str]], gen: dict[str, Any]) -> list[str]:
        """One batch: prompts with an image pruned by the method, text-only ones unpruned, answers in order."""
        kwargs = generation_kwargs(
            int(gen.get("max_new_tokens", self.max_new_tokens)),
            float(gen.get("temperature", 0.0) or 0.0),
            gen.get("top_p"),
            int(gen.get("num_beams", 1) or 1),
        )
        out: list[str] = [""] * len(prompts)
        with_image = [i for i, (image, _) in enumerate(prompts) if image is not None]
        text_only = [i for i, (image, _) in enumerate(prompts) if image is None]
        for indices, method in ((with_image, self.method), (text_only, None)):
            if not indices:
                continue
            images = None if method is None else [prompts[i][0] for i in indices]
            texts = [prompts[i][1] for i in indices]
            answers = generate_answers(self.model, self.processor, images, texts, method, kwargs)
            for i, answer in zip(indices, answers):
                out[i] = _cut_at_stop(answer.text, gen.get("until"))
        return out

    def generate_until(self, requests: list[Any]) -> list[str]:
        """Answer each request ``args = (context, gen_kwargs, doc_to_visual, doc_id, task, split)``, in
        batches of ``batch_size`` requests that share their generation arguments."""
        groups: dict[str, list[int]] = {}
        for i, request in enumerate(requests):
            gen = request.args[1] or {}
            groups.setdefault(json.dumps(gen, sort_keys=True, default=str), []).append(i)
        outputs: list[str] = [""] * len(requests)
        bar = tqdm(total=len(requests), desc=self.model_name, disable=self.rank != 0)
        for members in groups.values():
            for start in range(0, len(members), self.batch_size):
                chunk = members[start : start + self.batch_size]
                prompts = []
                for i in chunk:
                    context, _, doc_to_visual, doc_id, task, split = requests[i].args
                    visuals = _flatten(doc_to_visual(self.task_dict[task][split][doc_id]))
                    prompts.append(self._prompt(context, visuals))
                gen = dict(requests[chunk[0]].args[1] or {})
                for i, text in zip(chunk, self._generate(prompts, gen)):
                    outputs[i] = text
                bar.update(len(chunk))
        bar.close()
        return outputs

    def loglikelihood(self, requests: list[Any]) -> list[tuple[float, bool]]:
        raise NotImplementedError(f"{self.model_name} supports generation tasks (generate_until) only")

    def generate_until_multi_round(self, requests: list[Any]) -> list[str]:
        raise NotImplementedError(f"{self.model_name} supports single-round generation only")


class TrioLlava(TrioVLM):
    """:class:`TrioVLM` for LLaVA-1.5 checkpoints only."""

    family = "llava-1.5"
    model_name = "trio_llava"


class TrioLlavaNext(TrioVLM):
    """:class:`TrioVLM` for LLaVA-NeXT checkpoints only."""

    family = "llava-next"
    model_name = "trio_llava_next"


class TrioQwen2_5_VL(TrioVLM):
    """:class:`TrioVLM` for Qwen2.5-VL checkpoints only."""

    family = "qwen2.5-vl"
    model_name = "trio_qwen2_5_vl"


MODEL_CLASSES: tuple[type[TrioVLM], ...] = (TrioVLM, TrioLlava, TrioLlavaNext, TrioQwen2_5_VL)
#: The family-specific model name of each family.
MODEL_NAMES = {cls.family: cls.model_name for cls in MODEL_CLASSES if cls.family is not None}


def manifests() -> list[Any]:
    """The ``lmms_eval.models`` entry point: one ``ModelManifest`` per model name."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return [
        ModelManifest(model_id=cls.model_name, simple_class_path=f"{__name__}.{cls.__name__}")
        for cls in MODEL_CLASSES
    ]
