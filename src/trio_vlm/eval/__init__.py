"""Evaluation harness for the paper's eight benchmarks, on LLaVA's evaluation files.

``trio-vlm eval`` answers a benchmark (resumably, optionally sharded across processes) and scores it with
the official rules; ``trio-vlm table`` turns scored runs into the paper's table.
"""

from __future__ import annotations

from trio_vlm.eval.benches import BENCHMARKS, get_benchmark
from trio_vlm.eval.method_spec import MethodSpec
from trio_vlm.eval.runner import EvalConfig, run_eval

__all__ = ["BENCHMARKS", "EvalConfig", "MethodSpec", "get_benchmark", "run_eval"]
