"""Reading an option letter out of a free-form MMBench answer (MMBench's rule-based matching)."""

from __future__ import annotations

import re

_SEPARATORS = ".()[],:;!*#{}"


def _words(text: str) -> list[str]:
    for char in _SEPARATORS:
        text = text.replace(char, " ")
    return text.split()


# "The answer is A." / "Answer: (B)": an explicit choice, which the official pipeline's LLM judge would read
# but its word rule rejects for "A" (the article guard below).
_ANSWER_IS = re.compile(r"(?i:\banswer(?:\s+is|\s*:))\s*:?\s*\(?([A-Z])\)?\s*(?:[.)]|$)")


def letter_from_phrase(text: str, letters: list[str]) -> str | None:
    """The letter of an explicit "answer is X" / "Answer: X" when that phrase names exactly one option."""
    found = {m for m in _ANSWER_IS.findall(text) if m in letters}
    return found.pop() if len(found) == 1 else None


def letter_from_words(text: str, letters: list[str]) -> str | None:
    """The one option letter standing alone as a word ("B", "(B)", "B.", "The answer is B."). ``None`` if
    none or several appear, or if "A" appears in a longer answer, where it may be the article."""
    words = _words(text)
    found = [letter for letter in letters if letter in words]
    if len(found) != 1:
        return None
    if "A" in words and len(words) > 3:
        return None
    return found[0]


def letter_from_option_text(text: str, options: dict[str, str]) -> str | None:
    """The letter of the one option whose text occurs in the answer (case-insensitive)."""
    lowered = text.lower()
    found = [letter for letter, option in options.items() if str(option).lower() in lowered]
    return found[0] if len(found) == 1 else None


def mmbench_letter(text: str, options: dict[str, str]) -> str | None:
    """The chosen option's letter, or ``None`` when the answer names no single option (scored wrong; the
    official pipeline would then ask an LLM judge, which is not used here). Order: an explicit "answer is
    X" phrase, a lone option letter, then the text of exactly one option."""
    letters = list(options)
    return (
        letter_from_phrase(text, letters)
        or letter_from_words(text, letters)
        or letter_from_option_text(text, options)
    )
