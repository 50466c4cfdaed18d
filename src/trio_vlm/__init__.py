"""trio-vlm: training-free visual token reduction (TRIO and baselines) for HuggingFace vision-language models."""

from trio_vlm.api import PruneRun, apply
from trio_vlm.events import PruneEvent
from trio_vlm.methods.base import Group, Selection, StageContext, TokenMethod
from trio_vlm.methods.trio import TRIO
from trio_vlm.schedule import Schedule

__all__ = [
    "TRIO",
    "Group",
    "PruneEvent",
    "PruneRun",
    "Schedule",
    "Selection",
    "StageContext",
    "TokenMethod",
    "apply",
]
__version__ = "0.1.0"
