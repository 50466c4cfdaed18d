"""The eight benchmarks of the paper's table, by name."""

from __future__ import annotations

from trio_vlm.eval.benches.base import BenchFiles, Benchmark, BenchScore, LoadOptions
from trio_vlm.eval.benches.gqa import GQA
from trio_vlm.eval.benches.mmbench import MMBench, MMBenchCN
from trio_vlm.eval.benches.mme import MME
from trio_vlm.eval.benches.pope import Pope
from trio_vlm.eval.benches.sqa import ScienceQA
from trio_vlm.eval.benches.textvqa import TextVQA
from trio_vlm.eval.benches.vqav2 import VQAv2

# Paper column order: GQA, MMB, MMB-cn, MME, POPE, SQA, VQAv2, TextVQA.
BENCHMARKS: dict[str, type[Benchmark]] = {
    "gqa": GQA,
    "mmbench": MMBench,
    "mmbench_cn": MMBenchCN,
    "mme": MME,
    "pope": Pope,
    "sqa": ScienceQA,
    "vqav2": VQAv2,
    "textvqa": TextVQA,
}
PAPER_COLUMNS: dict[str, str] = {
    "gqa": "GQA",
    "mmbench": "MMB",
    "mmbench_cn": "MMB-cn",
    "mme": "MME",
    "pope": "POPE",
    "sqa": "SQA",
    "vqav2": "VQAv2",
    "textvqa": "TextVQA",
}


def get_benchmark(name: str) -> Benchmark:
    """The benchmark called ``name``; ``ValueError`` lists the known ones."""
    try:
        return BENCHMARKS[name.lower()]()
    except KeyError:
        raise ValueError(f"unknown benchmark {name!r}; available: {', '.join(BENCHMARKS)}") from None


__all__ = [
    "BENCHMARKS",
    "PAPER_COLUMNS",
    "BenchFiles",
    "BenchScore",
    "Benchmark",
    "LoadOptions",
    "get_benchmark",
]
