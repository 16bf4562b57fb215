"""Turning an LLM's free-form answer into a clean list of questions."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# "1." "1)" "(1)" "1:" "1 -" "-" "*" "•" "+" "Q1:" "Q1." "Question 1:" "**Question 1:**" ...
_MARKER = re.compile(
    r"""^(?:
        (?:q(?:uestion)?\s*\#?\d+\s*[:.)\-]?)      # Q1:  Question 2.  Q3)
      | (?:\(?\d+\s*[.):\]]|\d+\s+-)               # 1.  1)  (1)  1:  1 -
      | (?:[-*•+\u2013\u2014]|\#{1,6})                 # bullets and Markdown headings
      | (?:q(?:uestion)?\s*:)                      # Q:  Question:
    )\s*""",
    re.IGNORECASE | re.VERBOSE,
)
_EMPHASIS = re.compile(r"^(\*\*|__|\*|_|`)(.*?)\1$")
_ANSWER = re.compile(r"^(?:a(?:nswer)?\s*\d*\s*[:.)-])", re.IGNORECASE)
_STARTERS = (
    "what",
    "why",
    "how",
    "when",
    "where",
    "which",
    "who",
    "whom",
    "whose",
    "is",
    "are",
    "was",
    "were",
    "do",
    "does",
    "did",
    "can",
    "could",
    "should",
    "would",
    "will",
    "in what",
    "according to",
    "explain",
    "describe",
    "discuss",
    "compare",
    "contrast",
    "identify",
    "name",
    "list",
    "define",
    "summarize",
    "summarise",
    "outline",
    "evaluate",
    "analyze",
    "analyse",
    "state",
    "give",
)
_MIN_CHARS = 8


@dataclass
class ParsedQuestions:
    """The questions found in one answer, and what was dropped."""

    questions: list[str] = field(default_factory=list)
    dropped_lines: list[str] = field(default_factory=list)
    duplicates: int = 0
    surplus: int = 0


def normalize_question(text: str) -> str:
    """Key for de-duplication: case-folded, whitespace collapsed."""
    return " ".join(text.casefold().split())


def _strip_markers(line: str) -> tuple[str, bool]:
    marked = False
    for _ in range(4):
        m = _EMPHASIS.match(line)
        if m:
            line = m.group(2).strip()
            continue
        m = _MARKER.match(line)
        if m and m.end() > 0:
            line = line[m.end() :].strip()
            marked = True
            continue
        break
    line = line.strip("*_` ").strip()
    if len(line) >= 2 and line[0] == line[-1] and line[0] in "\"'“”":
        line = line[1:-1].strip()
    if line.startswith("“") and line.endswith("”"):
        line = line[1:-1].strip()
    return line, marked


def _is_question(line: str, marked: bool) -> bool:
    if len(line) < _MIN_CHARS or len(line.split()) < 2:
        return False
    if _ANSWER.match(line):
        return False
    if line.endswith("?"):
        return True
    if line.endswith(":"):
        return False  # a preamble such as "Here are 2 questions:"
    lowered = line.casefold()
    return marked and any(lowered == s or lowered.startswith(s + " ") for s in _STARTERS)


def parse_questions(answer: str, limit: int | None = None, seen: set[str] | None = None) -> ParsedQuestions:
    """Questions in `answer`, one per line, cleaned.

    Numbering and bullets are stripped; preambles, answers and other lines that are not questions are
    dropped; duplicates (case and whitespace insensitive, also against `seen`) are removed; at most
    `limit` questions are kept. `seen` is updated with the kept questions' keys.
    """
    seen = seen if seen is not None else set()
    result = ParsedQuestions()
    for raw in answer.splitlines():
        stripped = raw.strip()
        if not stripped:
            continue
        line, marked = _strip_markers(stripped)
        # "Q1: What is X? A: It is Y." keeps the question part
        if "?" in line and not line.endswith("?"):
            head, _, tail = line.partition("?")
            if _ANSWER.match(tail.strip()) or not tail.strip():
                line = head + "?"
        if not _is_question(line, marked):
            result.dropped_lines.append(stripped)
            continue
        key = normalize_question(line)
        if key in seen:
            result.duplicates += 1
            continue
        if limit is not None and len(result.questions) >= limit:
            result.surplus += 1
            continue
        seen.add(key)
        result.questions.append(" ".join(line.split()))
    return result
