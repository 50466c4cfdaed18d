"""A synthetic VQA testbed where visual-token choice decides the answer, and the small LLaVA trained on it."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def bundled_model_dir() -> Path:
    """The trained testbed checkpoint shipped with the package (``assets/testbed``)."""
    path = Path(str(resources.files("trio_vlm") / "assets" / "testbed"))
    if not (path / "model.safetensors").is_file():
        raise FileNotFoundError(
            f"testbed checkpoint missing: {path / 'model.safetensors'} (an incomplete install?); train one with "
            "'python -m trio_vlm.testbed.train --out DIR' and pass --model DIR"
        )
    return path
