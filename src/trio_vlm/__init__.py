"""trio-vlm: training-free visual token reduction (TRIO and baselines) for HuggingFace vision-language models."""

from trio_vlm.api import PruneRun, apply
from trio_vlm.contract import Group, PruneEvent, Selection, Stage, StageContext
from trio_vlm.methods.base import TokenMethod
from trio_vlm.methods.compose import Compose
from trio_vlm.methods.dart import DART
from trio_vlm.methods.fastv import FastV
from trio_vlm.methods.fixed import FixedSelection, Vanilla
from trio_vlm.methods.holov import HoloV
from trio_vlm.methods.pdrop import PDrop
from trio_vlm.methods.registry import available_methods, build_method, method_class, register
from trio_vlm.methods.sanity import Random, Uniform
from trio_vlm.methods.scope import SCOPE
from trio_vlm.methods.sparsevlm import SparseVLM
from trio_vlm.methods.trio import TRIO
from trio_vlm.methods.visionzip import VisionZip
from trio_vlm.presets import ModelShape, shape_of
from trio_vlm.schedule import Schedule

__all__ = [
    "DART",
    "SCOPE",
    "TRIO",
    "Compose",
    "FastV",
    "FixedSelection",
    "Group",
    "HoloV",
    "ModelShape",
    "PDrop",
    "PruneEvent",
    "PruneRun",
    "Random",
    "Schedule",
    "Selection",
    "SparseVLM",
    "Stage",
    "StageContext",
    "TokenMethod",
    "Uniform",
    "Vanilla",
    "VisionZip",
    "apply",
    "available_methods",
    "build_method",
    "method_class",
    "register",
    "shape_of",
]
__version__ = "0.2.0"
