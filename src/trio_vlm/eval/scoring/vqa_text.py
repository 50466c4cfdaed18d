"""EvalAI answer normalisation (the VQA challenge's rules, as LLaVA's M4C evaluator applies them).

Steps, in order: lower-case and drop ``,`` and ``?`` and split ``'s`` off; turn tabs/newlines into spaces;
remove or space out punctuation; drop periods not followed by a digit (the reference stops after 32);
map number words ("none", "zero" … "ten") to digits; drop the articles "a", "an", "the"; restore the
apostrophe of known contractions ("dont" → "don't").
"""

from __future__ import annotations

import re

# Canonical contractions. Each is reachable from every spelling that lacks exactly one of its apostrophes
# ("couldnt've" and "couldn'tve" → "couldn't've"), which is how the reference table is built.
_CANONICAL_TEXT = """
ain't aren't can't could've couldn't couldn't've didn't doesn't don't hadn't hadn't've hasn't haven't
he'd he'd've he's how'd how'll how's I'd've I'm I've isn't it'd it'd've it'll ma'am mightn't mightn't've
might've mustn't must've needn't not've o'clock oughtn't 'ow's'at shan't she'd've should've shouldn't
shouldn't've somebody'd've somebody'll somebody's someone'd someone'd've someone'll someone's something'd
something'd've something'll that's there'd there'd've there're there's they'd they'd've they'll they're
they've 'twas wasn't we'd've we've weren't what'll what're what's what've when's where'd where's where've
who'd who'd've who'll who's who've why'll why're why's won't would've wouldn't wouldn't've y'all y'all'll
y'all'd've you'd you'd've you'll you're you've
"""
_CANONICAL = _CANONICAL_TEXT.split()
# Entries of the reference table that do not follow the rule above (kept for exact parity).
_IRREGULAR = {"let's": "let's", "she's": "she's", "somebody'd": "somebodyd"}


def _contraction_table() -> dict[str, str]:
    table: dict[str, str] = {}
    for word in _CANONICAL:
        for i, char in enumerate(word):
            if char == "'":
                table[word[:i] + word[i + 1 :]] = word
    table.update(_IRREGULAR)
    return table


CONTRACTIONS = _contraction_table()
_NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
NUMBER_WORDS = {word: str(i) for i, word in enumerate(_NUMBERS)}
NUMBER_WORDS["none"] = "0"
ARTICLES = frozenset({"a", "an", "the"})
PUNCTUATION = tuple(';/[]"{}()=+\\_-><@`,?!')
_DIGIT_COMMA_DIGIT = re.compile(r"(?<=\d),+(?=\d)")
_PERIOD_NOT_BEFORE_DIGIT = re.compile(r"\.(?!\d)")
_MAX_PERIODS_REMOVED = 32  # the reference passes re.UNICODE (= 32) where ``sub`` expects ``count``


def _tokenize(text: str) -> str:
    return text.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()


def _punctuation(text: str) -> str:
    """Delete a punctuation mark that touches a space (or any mark when a digit-comma-digit occurs),
    otherwise replace it by a space; then drop periods that do not precede a digit."""
    glued_number = _DIGIT_COMMA_DIGIT.search(text) is not None
    out = text
    for mark in PUNCTUATION:
        touches_space = f"{mark} " in text or f" {mark}" in text
        out = out.replace(mark, "" if touches_space or glued_number else " ")
    return _PERIOD_NOT_BEFORE_DIGIT.sub("", out, count=_MAX_PERIODS_REMOVED)


def _digits_articles_contractions(text: str) -> str:
    words = [NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    words = [CONTRACTIONS.get(w, w) for w in words if w not in ARTICLES]
    return " ".join(words)


def normalize_vqa_answer(answer: str) -> str:
    """``answer`` after the EvalAI processing (what VQAv2 / TextVQA accuracy compares)."""
    text = _tokenize(answer).replace("\n", " ").replace("\t", " ").strip()
    return _digits_articles_contractions(_punctuation(text))
