"""MMBench / MMBench-CN dev: multiple choice with circular evaluation."""

from __future__ import annotations

import csv
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any, ClassVar

from trio_vlm.eval.benches.base import Answers, BenchFiles, Benchmark, BenchScore, LoadOptions
from trio_vlm.eval.reading.items import EvalItem
from trio_vlm.eval.reading.question_files import require_file
from trio_vlm.eval.scoring.option_letter import mmbench_letter

ALL_LETTERS = ("A", "B", "C", "D")
CIRCULAR_BASE = 1_000_000  # rows index, index + 1e6, … are the same question with rotated options
PROMPT_EN = "Answer with the option's letter from the given choices directly."
PROMPT_CN = "请直接回答选项字母。"
_REQUIRED = ("index", "question", "A", "B", "image")


def is_blank(value: str | None) -> bool:
    """An absent cell as pandas would read it: empty, ``nan`` or ``none`` (any case)."""
    return value is None or value.strip().lower() in ("", "nan", "none")


def read_tsv(path: Path) -> list[tuple[int, dict[str, str]]]:
    """``(line, row)`` pairs of MMBench's TSV (base64 images make fields huge); ``ValueError`` names a
    short row or a missing column."""
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh, delimiter="\t")
        header = next(reader, None)
        if header is None:
            raise ValueError(f"{path} is empty")
        missing = [c for c in _REQUIRED if c not in header]
        if missing:
            raise ValueError(f"{path}: missing column(s) {', '.join(missing)}")
        rows = []
        for row in reader:
            if not row:
                continue
            if len(row) != len(header):
                raise ValueError(f"{path}:{reader.line_num}: {len(row)} fields, the header has {len(header)}")
            rows.append((reader.line_num, dict(zip(header, row))))
    return rows


def build_question(row: dict[str, str], options: list[str]) -> str:
    """LLaVA's MMBench prompt body: optional hint line, the question, then ``"X. option"`` lines."""
    question = row["question"]
    if not is_blank(row.get("hint")):
        question = row["hint"] + "\n" + question
    for letter, option in zip(ALL_LETTERS, options):
        question += f"\n{letter}. {option}"
    return question


class MMBench(Benchmark):
    name = "mmbench"
    folder = "mmbench"
    question_file = "mmbench_dev_20230712.tsv"
    headline_name = "circular accuracy"
    answer_prompt: ClassVar[str] = PROMPT_EN

    def load(self, files: BenchFiles, options: LoadOptions) -> list[EvalItem]:
        """One item per row (the dev TSV already holds every rotation as rows ``index + k·1e6``); with
        ``mmbench_all_rounds`` each row is also asked with its options rotated, as LLaVA's ``--all-rounds``."""
        path = require_file(files.question_file, f"{self.name} question file")
        items = []
        for line, row in read_tsv(path):
            where = f"{path}:{line}"
            try:
                index = int(row["index"])
            except ValueError:
                raise ValueError(f"{where}: index must be an integer, got {row['index']!r}") from None
            choices = []
            for letter in ALL_LETTERS:
                if is_blank(row.get(letter)):
                    break
                choices.append(row[letter])
            if len(choices) < 2:
                raise ValueError(f"{where}: a question needs at least options A and B")
            gold = (row.get("answer") or "").strip()
            if gold and gold not in ALL_LETTERS[: len(choices)]:
                raise ValueError(f"{where}: answer {gold!r} is not one of the {len(choices)} options")
            rounds = len(choices) if options.mmbench_all_rounds else 1
            for round_id in range(rounds):
                shown = choices[round_id:] + choices[:round_id]
                letters = list(ALL_LETTERS[: len(choices)])
                question = build_question(row, shown)
                gold_shown = letters[(letters.index(gold) - round_id) % len(choices)] if gold else None
                items.append(
                    EvalItem(
                        question_id=index,
                        prompt=question,
                        text=question + "\n" + self.answer_prompt,
                        image_b64=row["image"],
                        extra={
                            "round_id": round_id,
                            "options": shown,
                            "option_char": letters[round_id:] + letters[:round_id],
                        },
                        info={
                            "gold": gold_shown,
                            "category": row.get("category", ""),
                            "shown": dict(zip(letters, shown)),
                        },
                        source=where,
                    )
                )
        return items

    def score(self, items: list[EvalItem], answers: Answers, files: BenchFiles, out_dir: Path) -> BenchScore:
        if any(item.info["gold"] is None for item in items):
            raise ValueError(
                f"{files.question_file} has no 'answer' column values: only the dev split can be scored "
                "locally (submit test-split answers to the MMBench server)"
            )
        groups: dict[int, list[EvalItem]] = defaultdict(list)
        for item in items:
            groups[int(item.question_id) % CIRCULAR_BASE].append(item)
        circular: list[bool] = []
        by_category: dict[str, list[bool]] = defaultdict(list)
        single: list[bool] = []
        incomplete, unparsed = 0, 0
        for group in groups.values():
            if not all(item.key in answers for item in group):
                incomplete += any(item.key in answers for item in group)
                continue
            oks = []
            for item in group:
                letter = mmbench_letter(answers[item.key]["text"], item.info["shown"])
                unparsed += letter is None
                oks.append(letter == item.info["gold"])
                if int(item.question_id) < CIRCULAR_BASE and item.extra["round_id"] == 0:
                    single.append(oks[-1])
            circular.append(all(oks))
            by_category[group[0].info["category"]].append(all(oks))
        notes = (
            [f"{incomplete} questions have only some rotations answered and were left out"]
            if incomplete
            else []
        )
        accuracy = 100 * sum(circular) / len(circular) if circular else None
        metrics: dict[str, Any] = {
            "circular_accuracy": accuracy,
            "questions": len(circular),
            "single_pass_accuracy": 100 * sum(single) / len(single) if single else None,
            "unparsed_answers": unparsed,
            "incomplete_questions": incomplete,
            "by_category": {c: 100 * sum(v) / len(v) for c, v in sorted(by_category.items())},
        }
        return BenchScore(accuracy, metrics, notes)


class MMBenchCN(MMBench):
    name = "mmbench_cn"
    folder = "mmbench_cn"
    question_file = "mmbench_dev_cn_20231003.tsv"
    answer_prompt = PROMPT_CN
