"""Parsing LLM answers, chunking, prompts and Retry-After: pure functions of dataset generation."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import pytest
from tests.fakes.fake_llm import messy_answer

from finetune_trainer.generate.chunking import chunk_text, split_sentences
from finetune_trainer.generate.documents import html_to_text, markdown_to_text
from finetune_trainer.generate.llm import parse_retry_after
from finetune_trainer.generate.parsing import parse_questions
from finetune_trainer.generate.pipeline import query_id, render_prompt

pytestmark = pytest.mark.unit

A, B, C = "What is a FinetuneJob?", "How does the adapter engine train?", "Why is the corpus shared?"

PARSE_CASES = [
    ("numbered dots", f"1. {A}\n2. {B}", 2, [A, B]),
    ("numbered parens", f"1) {A}\n\n2) {B}\n", 2, [A, B]),
    ("parenthesised numbers", f"(1) {A}\n(2) {B}", 2, [A, B]),
    ("dash bullets", f"- {A}\n- {B}", 2, [A, B]),
    ("star bullets", f"* {A}\n* {B}", 2, [A, B]),
    ("unicode bullets", f"• {A}\n• {B}", 2, [A, B]),
    ("Q prefixes", f"Q1: {A}\nQ2: {B}", 2, [A, B]),
    ("Question prefixes in bold", f"**Question 1:** {A}\n**Question 2:** {B}", 2, [A, B]),
    ("bold question", f"1. **{A}**\n2. **{B}**", 2, [A, B]),
    ("quoted", f'1. "{A}"\n2. "{B}"', 2, [A, B]),
    ("preamble dropped", f"Here are 2 questions:\n\n1. {A}\n2. {B}", 2, [A, B]),
    ("preamble without colon dropped", f"Sure! Here are some questions based on the text.\n1. {A}", 1, [A]),
    ("closing remark dropped", f"- {A}\n- {B}\n\nI hope these help!", 2, [A, B]),
    ("answers dropped", f"1. {A}\n   Answer: it is a resource.\n2. {B}\nA: with AdamW.", 2, [A, B]),
    ("inline answer cut", f"Q1: {A} A: a resource.", 1, [A]),
    (
        "duplicates case and space insensitive",
        f"1. {A}\n2. {A.upper()}\n3.   {A.replace(' ', '  ')}\n4. {B}",
        3,
        [A, B],
    ),
    ("capped at the asked number", f"1. {A}\n2. {B}\n3. {C}", 2, [A, B]),
    ("fewer than asked", f"1. {A}", 3, [A]),
    (
        "imperative numbered kept",
        "1. Explain how checkpoints are saved.\n2. Describe the quota.",
        2,
        ["Explain how checkpoints are saved.", "Describe the quota."],
    ),
    ("imperative unnumbered prose dropped", "The text describes checkpoints.", 2, []),
    ("heading dropped", "## Questions\n1. " + A, 2, [A]),
    ("empty answer", "", 2, []),
    ("only blank lines", "\n\n  \n", 2, []),
    ("tiny fragments dropped", "1. ?\n2. Why?\n3. " + A, 2, [A]),
    ("plain lines ending in ?", f"{A}\n{B}", 2, [A, B]),
    ("question number with dash", f"1 - {A}\n2 - {B}", 2, [A, B]),
]


@pytest.mark.parametrize(
    ("answer", "limit", "expected"), [c[1:] for c in PARSE_CASES], ids=[c[0] for c in PARSE_CASES]
)
def test_parse_questions(answer: str, limit: int, expected: list[str]) -> None:
    assert parse_questions(answer, limit=limit).questions == expected


def test_parse_counts_dropped_duplicates_and_surplus() -> None:
    parsed = parse_questions(f"Here you go:\n1. {A}\n2. {A.lower()}\n3. {B}\n4. {C}", limit=2)
    assert parsed.questions == [A, B]
    assert parsed.duplicates == 1
    assert parsed.surplus == 1
    assert parsed.dropped_lines == ["Here you go:"]


def test_parse_dedupes_against_seen() -> None:
    seen: set[str] = set()
    parse_questions(f"1. {A}", seen=seen)
    assert parse_questions(f"1. {A.lower()}\n2. {B}", seen=seen).questions == [B]


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_fake_answers_parse_into_clean_questions(n: int) -> None:
    """Every messy style of the fake LLM parses into at most n distinct questions, at least one."""
    for i in range(40):
        prompt = render_prompt(
            "ctx:\n-----\n{context_str}\n-----\nwrite {num_questions_per_chunk} questions",
            f"Chunk {i} about operators, adapters and checkpoints number {i * 7}.",
            n,
        )
        parsed = parse_questions(messy_answer(prompt), limit=n)
        assert 1 <= len(parsed.questions) <= n
        keys = [" ".join(q.casefold().split()) for q in parsed.questions]
        assert len(set(keys)) == len(keys)
        assert all(not q[0].isdigit() and not q.startswith(("-", "*", "Q1")) for q in parsed.questions)


def test_render_prompt_leaves_other_braces() -> None:
    out = render_prompt("{context_str} | {num_questions_per_chunk} | {other} {}", "CTX", 3)
    assert out == "CTX | 3 | {other} {}"


def test_query_ids_are_deterministic_uuids() -> None:
    assert query_id("abc", 0) == query_id("abc", 0)
    assert query_id("abc", 0) != query_id("abc", 1) != query_id("abd", 1)
    assert len(query_id("abc", 0)) == 36


# ------------------------------------------------------------------ chunking

SENTENCES = [f"Sentence {i} is here." for i in range(40)]
TEXT = " ".join(SENTENCES)


def test_split_sentences_keeps_text() -> None:
    assert split_sentences("One. Two!  Three?\n\nFour\nfive.") == ["One.", "Two!", "Three?", "Four five."]


@pytest.mark.parametrize(("size", "overlap"), [(64, 0), (64, 20), (100, 40), (200, 199), (1000, 100)])
def test_chunks_respect_size_and_sentence_boundaries(size: int, overlap: int) -> None:
    chunks = chunk_text(TEXT, size, overlap)
    assert chunks
    assert all(len(c) <= size for c in chunks)
    for chunk in chunks:  # only whole sentences
        assert all(s in SENTENCES for s in split_sentences(chunk))
    covered = {s for c in chunks for s in split_sentences(c)}
    assert covered == set(SENTENCES)


def test_overlap_carries_trailing_sentences() -> None:
    chunks = chunk_text(TEXT, 100, 40)
    for prev, nxt in itertools.pairwise(chunks):
        prev_s, next_s = split_sentences(prev), split_sentences(nxt)
        carried = [s for s in next_s if s in prev_s]
        assert carried, "consecutive chunks share their boundary sentences"
        assert carried == prev_s[-len(carried) :]
        assert len(" ".join(carried)) <= 40
    no_overlap = chunk_text(TEXT, 100, 0)
    assert sum(len(split_sentences(c)) for c in no_overlap) == len(SENTENCES)


def test_long_sentence_is_cut_at_words() -> None:
    long = " ".join(["word"] * 100) + "."
    chunks = chunk_text(long + " Short one.", 64, 10)
    assert all(len(c) <= 64 for c in chunks)
    assert chunks[-1].endswith("Short one.")
    assert chunk_text("x" * 150, 64, 0) == ["x" * 64, "x" * 64, "x" * 22]


@pytest.mark.parametrize(("size", "overlap"), [(0, 0), (64, 64), (64, -1)])
def test_chunk_arguments_checked(size: int, overlap: int) -> None:
    with pytest.raises(ValueError, match="chunk_"):
        chunk_text(TEXT, size, overlap)


# ------------------------------------------------------------------ markup


def test_html_to_text() -> None:
    html = (
        "<html><head><title>Guide</title><style>p{color:red}</style><script>var x=1;</script></head>"
        "<body><h1>Intro</h1><p>First &amp; <b>bold</b> text.</p><ul><li>One</li><li>Two</li></ul>"
        "<noscript>enable js</noscript></body></html>"
    )
    text = html_to_text(html)
    assert text.startswith("Guide")
    assert "First & bold text." in text
    assert "One\n\nTwo" in text
    for hidden in ("color:red", "var x", "enable js"):
        assert hidden not in text


def test_markdown_to_text() -> None:
    text = markdown_to_text("# Title\n\nSee [the docs](http://x/y) and ![img](a.png).\n<!-- hidden -->\n")
    assert text.splitlines()[0] == "Title."
    assert "See the docs and img." in text
    assert "hidden" not in text and "http://x/y" not in text


# ------------------------------------------------------------------ Retry-After


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2", 2.0),
        ("0.5", 0.5),
        ("-3", 0.0),
        ("100000", 300.0),
        (None, None),
        ("", None),
        ("soon", None),
        ("Wed, 21 Oct 2026 07:28:10 GMT", 10.0),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    now = datetime(2026, 10, 21, 7, 28, 0, tzinfo=UTC)
    assert parse_retry_after(value, now=now) == expected
