"""Splitting text into overlapping chunks on sentence boundaries."""

from __future__ import annotations

import hashlib
import re

_SENTENCE_END = re.compile(r"(?<=[.!?…])[\"')\]]*\s+|\n\s*\n+")
_WS = re.compile(r"[ \t\r\f\v]+")


def chunk_hash(text: str) -> str:
    """sha256 hex digest of a chunk's text: the key of a chunk in the resume state."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def split_sentences(text: str) -> list[str]:
    """Sentences (and paragraphs) of a text, whitespace normalised, empty ones dropped."""
    out: list[str] = []
    for part in _SENTENCE_END.split(text):
        sentence = _WS.sub(" ", part).strip()
        sentence = re.sub(r"\s*\n\s*", " ", sentence)
        if sentence:
            out.append(sentence)
    return out


def _hard_split(sentence: str, size: int) -> list[str]:
    """Split one over-long sentence at word boundaries (or mid-word when a word is longer than size)."""
    pieces: list[str] = []
    current = ""
    for original in sentence.split(" "):
        word = original
        while len(word) > size:
            if current:
                pieces.append(current)
                current = ""
            pieces.append(word[:size])
            word = word[size:]
        candidate = f"{current} {word}" if current else word
        if len(candidate) > size:
            pieces.append(current)
            current = word
        else:
            current = candidate
    if current:
        pieces.append(current)
    return pieces


def chunk_text(text: str, chunk_size: int, chunk_overlap: int) -> list[str]:
    """Pack whole sentences into chunks of at most `chunk_size` characters.

    Each chunk after the first starts with the last sentences of the previous one, up to
    `chunk_overlap` characters. A sentence longer than `chunk_size` is cut at word boundaries.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    if not 0 <= chunk_overlap < chunk_size:
        raise ValueError(f"chunk_overlap must be in [0, chunk_size), got {chunk_overlap}")
    sentences: list[str] = []
    for sentence in split_sentences(text):
        sentences.extend(_hard_split(sentence, chunk_size) if len(sentence) > chunk_size else [sentence])

    chunks: list[str] = []
    current: list[str] = []
    length = 0  # length of " ".join(current)
    fresh = 0  # sentences in `current` not carried over from the previous chunk
    for sentence in sentences:
        added = len(sentence) + (1 if current else 0)
        if current and length + added > chunk_size:
            if fresh:
                chunks.append(" ".join(current))
            # carry the tail of this chunk over, within the overlap budget
            carried: list[str] = []
            carried_len = 0
            for prev in reversed(current):
                extra = len(prev) + (1 if carried else 0)
                if carried_len + extra > chunk_overlap:
                    break
                carried.insert(0, prev)
                carried_len += extra
            # the carried sentences and the new one must fit together
            while carried and carried_len + 1 + len(sentence) > chunk_size:
                carried_len -= len(carried.pop(0)) + (1 if carried else 0)
            current, length, fresh = carried, carried_len, 0
            added = len(sentence) + (1 if current else 0)
        current.append(sentence)
        length += added
        fresh += 1
    if current and fresh:
        chunks.append(" ".join(current))
    return chunks
