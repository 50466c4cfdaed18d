"""lmms-eval model plugin: ``lmms-eval --model trio_llava --model_args pretrained=…,method=trio,budget=64``.

Installed with ``pip install 'trio-vlm[lmms]'``; lmms-eval (>= 0.6) finds it through the ``lmms_eval.models``
entry point, which returns :func:`manifest`. The class also works without lmms-eval installed (it then
derives from a minimal stand-in base), which is how it is tested.

Note: lmms-eval's own task definitions differ from LLaVA's scripts (POPE scored by whole-answer equality,
TextVQA without OCR tokens), so its numbers are not the paper's; ``trio-vlm eval`` is the reference path.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from typing import Any

from PIL import Image
from tqdm import tqdm

from trio_vlm.eval.reading.images import expand_to_square, mean_colour
from trio_vlm.eval.sharding import world_from_env
from trio_vlm.generation import generate_answer, generation_kwargs
from trio_vlm.loading import load_model_and_processor, model_shape
from trio_vlm.methods.request import MethodRequest
from trio_vlm.prompts import check_conv_mode, prompt_for

logger = logging.getLogger(__name__)

MODEL_ID = "trio_llava"

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


def manifest() -> Any:
    """The ``lmms_eval.models`` entry point: registers :class:`TrioLlava` as ``trio_llava``."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id=MODEL_ID, simple_class_path=f"{__name__}.TrioLlava")


def _as_bool(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise ValueError(f"{name} must be true or false, got {value!r}")


def _as_optional_int(value: Any, name: str) -> int | None:
    if value is None or str(value).strip().lower() in ("", "none"):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an integer, got {value!r}") from None


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


class TrioLlava(_Base):
    """A LLaVA-1.5 checkpoint pruned by any registered trio-vlm method (``method=vanilla``: unpruned).

    Model args: ``pretrained`` (default: the bundled tiny random model), ``method``, ``budget``, ``mode``,
    ``device``, ``dtype``, ``device_map``, ``conv_mode``, ``pad_square``, ``max_new_tokens``.
    """

    is_simple = True

    def __init__(
        self,
        pretrained: str | None = None,
        method: str = "trio",
        budget: int | str | None = 64,
        mode: str | None = None,
        device: str = "cpu",
        dtype: str = "auto",
        device_map: str | None = None,
        conv_mode: str = "vicuna_v1",
        pad_square: bool | str = True,
        max_new_tokens: int | str = 1024,
        batch_size: int | str = 1,
        **unexpected: Any,
    ) -> None:
        super().__init__()
        if unexpected:
            raise ValueError(f"unexpected trio_llava model args: {', '.join(sorted(unexpected))}")
        if int(batch_size) != 1:
            raise ValueError(
                f"trio_llava answers one request at a time; batch_size must be 1, got {batch_size}"
            )
        vanilla = str(method).lower() == "vanilla"
        self.request = MethodRequest(
            str(method), None if vanilla else _as_optional_int(budget, "budget"), mode or None
        )
        world, rank = world_from_env()
        self._rank, self._world_size = rank, world
        if world > 1 and device == "cuda" and device_map is None:
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        if pretrained is None:
            from trio_vlm.bundled import default_model_dir

            pretrained = str(default_model_dir())
        self.method = self.request.build(model_shape(pretrained))
        self._model, self.processor = load_model_and_processor(
            pretrained, device, dtype, device_map=device_map or None
        )
        self.conv_mode = conv_mode
        check_conv_mode(conv_mode)
        self._fill = mean_colour(self.processor) if _as_bool(pad_square, "pad_square") else None
        self.max_new_tokens = int(max_new_tokens)

    @property
    def model(self) -> Any:
        return self._model

    def _answer(self, context: str, visuals: list[Any], gen: dict[str, Any]) -> str:
        images = [v for v in visuals if isinstance(v, Image.Image)]
        if len(images) < len(visuals):
            raise ValueError("trio_llava handles images only (no video or audio inputs)")
        if len(images) > 1:
            logger.warning("LLaVA-1.5 takes one image per prompt; using the first of %d", len(images))
        question = context.replace("<image>", "").strip()
        if images:
            image = images[0].convert("RGB")
            if self._fill is not None:
                image = expand_to_square(image, self._fill)
            prompt, method = prompt_for(question, self.conv_mode, self.processor), self.method
        else:
            image, prompt, method = (
                None,
                prompt_for(question, self.conv_mode, self.processor, image=False),
                None,
            )
        kwargs = generation_kwargs(
            int(gen.get("max_new_tokens", self.max_new_tokens)),
            float(gen.get("temperature", 0.0) or 0.0),
            gen.get("top_p"),
            int(gen.get("num_beams", 1) or 1),
        )
        answer = generate_answer(self.model, self.processor, image, prompt, method, kwargs)
        return _cut_at_stop(answer.text, gen.get("until"))

    def generate_until(self, requests: list[Any]) -> list[str]:
        """Answer each request ``args = (context, gen_kwargs, doc_to_visual, doc_id, task, split)``."""
        outputs = []
        for request in tqdm(requests, desc="trio_llava", disable=self.rank != 0):
            context, gen_kwargs, doc_to_visual, doc_id, task, split = request.args
            visuals = _flatten(doc_to_visual(self.task_dict[task][split][doc_id]))
            outputs.append(self._answer(context, visuals, dict(gen_kwargs or {})))
        return outputs

    def loglikelihood(self, requests: list[Any]) -> list[tuple[float, bool]]:
        raise NotImplementedError("trio_llava supports generation tasks (generate_until) only")

    def generate_until_multi_round(self, requests: list[Any]) -> list[str]:
        raise NotImplementedError("trio_llava supports single-round generation only")
