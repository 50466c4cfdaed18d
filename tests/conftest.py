import logging
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

logging.getLogger("transformers").setLevel(logging.ERROR)
torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tiny():
    from trio_vlm.testing.tiny import tiny_llava

    return tiny_llava(seed=0)


@pytest.fixture(scope="session")
def tiny_eager():
    from trio_vlm.testing.tiny import tiny_llava

    return tiny_llava(seed=0, attn_implementation="eager")
