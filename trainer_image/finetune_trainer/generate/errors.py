"""Errors of dataset generation."""

from __future__ import annotations


class GenerationError(RuntimeError):
    """Dataset generation cannot go on.

    The message names the document or the LLM URL at fault. `retryable` is True for failures that a
    later attempt may not meet again (an unreachable or overloaded LLM), False for bad input (a document
    that cannot be read, a rejected request).
    """

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable
