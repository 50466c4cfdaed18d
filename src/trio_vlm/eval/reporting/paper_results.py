"""The paper's accuracy table for LLaVA-1.5-7B (arXiv 2602.04657), as published, for `trio-vlm table`."""

from __future__ import annotations

import csv
import io

PAPER_LLAVA15_7B_CSV = """\
setting,method,venue,GQA,MMB,MMB-cn,MME,POPE,SQA,VQAv2,TextVQA,Average
Upper Bound (576),Vanilla,–,61.9,64.7,58.1,1862,85.9,69.5,78.5,58.2,100%
w/o VE (192),FastV,ECCV’24,52.7,61.2,57.0,1612,64.8,67.3,67.1,52.5,89.0%
w/o VE (192),PDrop,CVPR’25,57.1,63.2,56.8,1766,82.3,68.8,75.1,56.1,96.2%
w/o VE (192),SparseVLM,ICML’25,59.5,64.1,53.7,1787,85.3,68.7,75.6,57.8,97.2%
w/o VE (192),DART,EMNLP’25,60.0,63.6,57.0,1856,82.8,69.8,76.7,57.4,98.3%
w/o VE (192),TRIO (Ours),Ours,61.0,64.4,57.6,1789,86.5,69.0,77.7,57.2,98.8%
w/ VE (192),VisionZip,CVPR’25,59.3,63.0,57.3,1782,85.3,68.9,76.8,57.3,97.8%
w/ VE (192),HoloV,NeurIPS’25,59.0,65.4,58.0,1820,85.6,69.8,76.7,57.4,98.7%
w/ VE (192),SCOPE,NeurIPS’25,60.1,63.6,56.8,1804,86.4,68.8,77.2,57.7,98.3%
w/ VE (192),TRIO (Ours),Ours,61.1,64.2,57.9,1808,86.4,68.2,77.9,57.4,98.9%
w/o VE (128),FastV,ECCV’24,49.6,56.1,56.4,1490,59.6,60.2,61.8,50.6,83.2%
w/o VE (128),PDrop,CVPR’25,56.0,61.1,56.6,1644,82.3,68.3,72.9,55.1,94.0%
w/o VE (128),SparseVLM,ICML’25,58.4,64.5,51.1,1746,85.0,68.6,73.8,56.7,95.6%
w/o VE (128),DART,EMNLP’25,58.7,63.2,57.5,1840,80.1,69.1,75.9,56.4,97.0%
w/o VE (128),TRIO (Ours),Ours,60.0,62.9,57.1,1807,86.7,68.5,76.5,57.2,98.1%
w/ VE (128),VisionZip,CVPR’25,57.6,62.0,56.7,1761.7,83.2,68.9,75.6,56.8,96.4%
w/ VE (128),HoloV,NeurIPS’25,57.7,63.9,56.5,1802,84.0,69.8,75.5,56.8,97.2%
w/ VE (128),SCOPE,NeurIPS’25,59.7,62.5,56.9,1776,86.1,68.4,76.5,57.2,97.5%
w/ VE (128),TRIO (Ours),Ours,60.0,62.9,56.7,1799,86.4,69.2,77.1,57.0,98.1%
w/o VE (64),FastV,ECCV’24,46.1,48.0,52.7,1256,48.0,51.1,55.0,47.8,74.0%
w/o VE (64),PDrop,CVPR’25,41.9,33.3,50.5,1092,55.9,68.6,69.2,45.9,74.4%
w/o VE (64),SparseVLM,ICML’25,53.8,60.1,52.7,1589,77.5,69.8,68.2,53.4,90.6%
w/o VE (64),DART,EMNLP’25,55.9,60.6,53.2,1765,73.9,69.8,72.4,54.4,92.8%
w/o VE (64),TRIO (Ours),Ours,58.0,61.6,53.7,1681,84.3,68.5,74.8,54.9,94.7%
w/ VE (64),VisionZip,CVPR’25,55.1,60.1,55.4,1690,77.0,69.0,72.4,55.5,93.0%
w/ VE (64),HoloV,NeurIPS’25,55.3,63.3,55.1,1715,80.3,69.5,72.8,55.4,94.4%
w/ VE (64),SCOPE,NeurIPS’25,58.3,61.7,54.4,1698,83.9,68.6,75.3,56.6,95.4%
w/ VE (64),TRIO (Ours),Ours,58.3,61.6,56.5,1744,86.4,68.6,75.9,56.2,96.6%
"""


def paper_rows(text: str = PAPER_LLAVA15_7B_CSV) -> list[dict[str, str]]:
    """The table's rows as dicts keyed by its header (setting, method, venue, the benchmarks, Average)."""
    rows = list(csv.DictReader(io.StringIO(text)))
    if not rows or "setting" not in rows[0] or "method" not in rows[0]:
        raise ValueError("a paper table needs 'setting' and 'method' columns")
    return rows
