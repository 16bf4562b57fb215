"""Dataset generation: questions about document chunks written by an LLM (the reference's
`generate_qa_embedding_pairs`), through any OpenAI-compatible chat-completions endpoint."""

from .chunking import chunk_hash, chunk_text, split_sentences
from .documents import Document, html_to_text, load_documents
from .errors import GenerationError
from .llm import API_KEY_ENV, API_KEY_FILE_ENV, QuestionClient, Usage, read_api_key
from .parsing import ParsedQuestions, parse_questions
from .pipeline import (
    REPORT_FILE,
    TRAIN_FILE,
    VALIDATION_FILE,
    GenerationResult,
    generate_dataset,
    render_prompt,
)
from .state import STATE_FILE

__all__ = [
    "API_KEY_ENV",
    "API_KEY_FILE_ENV",
    "REPORT_FILE",
    "STATE_FILE",
    "TRAIN_FILE",
    "VALIDATION_FILE",
    "Document",
    "GenerationError",
    "GenerationResult",
    "ParsedQuestions",
    "QuestionClient",
    "Usage",
    "chunk_hash",
    "chunk_text",
    "generate_dataset",
    "html_to_text",
    "load_documents",
    "parse_questions",
    "read_api_key",
    "render_prompt",
    "split_sentences",
]
