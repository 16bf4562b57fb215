"""Loading documents (text, Markdown, HTML, PDF) from local paths, http(s):// URLs and s3:// URIs."""

from __future__ import annotations

import io
import logging
import os
import re
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from .errors import GenerationError

log = logging.getLogger(__name__)

TEXT_SUFFIXES = {".txt", ".text", ".md", ".markdown", ".rst", ".html", ".htm", ".xhtml", ".pdf"}
_MAX_DOCUMENT_BYTES = 200 * 1024 * 1024
_BLOCK_TAGS = {
    "p",
    "div",
    "br",
    "li",
    "ul",
    "ol",
    "tr",
    "table",
    "section",
    "article",
    "header",
    "footer",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "pre",
    "blockquote",
    "hr",
    "dd",
    "dt",
    "title",
    "main",
    "nav",
    "aside",
    "td",
    "th",
}
_SKIP_TAGS = {"script", "style", "noscript", "template", "svg", "head"}


@dataclass(frozen=True)
class Document:
    """The text of one document and where it came from."""

    source: str
    text: str
    kind: str  # text, markdown, html or pdf


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title: list[str] = []
        self._skip = 0
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self._in_title = True
        elif tag in _SKIP_TAGS:
            self._skip += 1
        if tag in _BLOCK_TAGS:
            self.parts.append("\n\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        elif tag in _SKIP_TAGS and self._skip:
            self._skip -= 1
        if tag in _BLOCK_TAGS:
            self.parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title.append(data)
        elif not self._skip:
            self.parts.append(data)


def html_to_text(html: str) -> str:
    """Visible text of an HTML page: scripts, styles and the head dropped, blocks become paragraphs."""
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    text = "".join(parser.parts)
    lines = [" ".join(line.split()) for line in text.splitlines()]
    text = "\n".join(lines)
    text = re.sub(r"\n{3,}", "\n\n", text).strip()
    title = " ".join("".join(parser.title).split())
    if title and not text.startswith(title):
        text = f"{title}\n\n{text}" if text else title
    return text


def markdown_to_text(md: str) -> str:
    """Markdown with the markup that carries no meaning removed (heading marks, images, link targets)."""
    text = re.sub(r"<!--.*?-->", "", md, flags=re.DOTALL)
    text = re.sub(r"!\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"\[([^\]]+)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"^\s{0,3}#{1,6}\s*(.*?)\s*#*\s*$", lambda m: m.group(1) + ".", text, flags=re.MULTILINE)
    text = re.sub(r"^\s*```.*$", "", text, flags=re.MULTILINE)
    return text.strip()


def pdf_to_text(data: bytes, source: str) -> str:
    """Text of a PDF's pages, via pypdf."""
    import pypdf

    try:
        reader = pypdf.PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise GenerationError(f"document {source}: the PDF is encrypted")
        pages = [page.extract_text() or "" for page in reader.pages]
    except GenerationError:
        raise
    except Exception as exc:
        raise GenerationError(f"document {source}: cannot read the PDF: {exc}") from exc
    return "\n\n".join(p.strip() for p in pages if p.strip())


def _kind(source: str, data: bytes) -> str:
    suffix = Path(source.split("?", 1)[0]).suffix.lower()
    if suffix == ".pdf" or data.startswith(b"%PDF-"):
        return "pdf"
    if suffix in (".html", ".htm", ".xhtml"):
        return "html"
    if suffix in (".md", ".markdown"):
        return "markdown"
    head = data[:2048].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html")) or b"<html" in head:
        return "html"
    return "text"


def decode_document(source: str, data: bytes) -> Document:
    """A Document from raw bytes; binary content that is not a PDF is refused, naming the source."""
    kind = _kind(source, data)
    if kind == "pdf":
        return Document(source, pdf_to_text(data, source), kind)
    if b"\x00" in data[:8192]:
        raise GenerationError(
            f"document {source}: binary content; expected plain text, Markdown, HTML or PDF"
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise GenerationError(
            f"document {source}: not UTF-8 text (byte {exc.start}); expected plain text, Markdown, HTML or PDF"
        ) from exc
    if kind == "html":
        return Document(source, html_to_text(text), kind)
    if kind == "markdown":
        return Document(source, markdown_to_text(text), kind)
    return Document(source, text.strip(), kind)


def _read_remote(location: str, storage_options: dict[str, Any]) -> bytes:
    import fsspec

    try:
        with fsspec.open(location, "rb", **storage_options) as fh:
            data: bytes = fh.read(_MAX_DOCUMENT_BYTES + 1)
    except FileNotFoundError as exc:
        raise GenerationError(f"document {location}: not found") from exc
    except Exception as exc:
        raise GenerationError(f"document {location}: cannot be read: {exc}") from exc
    if len(data) > _MAX_DOCUMENT_BYTES:
        raise GenerationError(f"document {location}: larger than {_MAX_DOCUMENT_BYTES} bytes")
    return data


def _read_local(path: Path) -> bytes:
    try:
        if path.stat().st_size > _MAX_DOCUMENT_BYTES:
            raise GenerationError(f"document {path}: larger than {_MAX_DOCUMENT_BYTES} bytes")
        return path.read_bytes()
    except GenerationError:
        raise
    except OSError as exc:
        raise GenerationError(f"document {path}: cannot be read: {exc.strerror or exc}") from exc


def _walk(directory: Path, warnings: list[str]) -> list[Path]:
    """Files under a directory, sorted; hidden entries (such as a ConfigMap mount's ..data) skipped."""
    found: list[Path] = []
    for root, dirs, files in os.walk(directory, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith("."):
                continue
            path = Path(root) / name
            suffix = path.suffix.lower()
            if suffix and suffix not in TEXT_SUFFIXES:
                warnings.append(f"skipped {path}: unsupported file type {suffix}")
                continue
            found.append(path)
    return found


def load_documents(
    locations: list[str], storage_options: dict[str, Any] | None = None, warnings: list[str] | None = None
) -> list[Document]:
    """Read every document: files, directories (recursively), http(s):// URLs and s3:// URIs.

    Raises GenerationError naming the location when one cannot be read, is binary, or when no document
    with text is found at all. Documents without text are skipped with a warning.
    """
    warnings = warnings if warnings is not None else []
    if not locations:
        raise GenerationError("no documents given")
    docs: list[Document] = []
    for location in locations:
        if re.match(r"^(https?|s3)://", location):
            opts = (storage_options or {}) if location.startswith("s3://") else {}
            docs.append(decode_document(location, _read_remote(location, opts)))
            continue
        path = Path(location.removeprefix("file://"))
        if path.is_dir():
            files = _walk(path, warnings)
            if not files:
                raise GenerationError(
                    f"documents {location}: the directory holds no text, Markdown, HTML or PDF files"
                )
            docs.extend(decode_document(str(f), _read_local(f)) for f in files)
        elif path.exists():
            docs.append(decode_document(str(path), _read_local(path)))
        else:
            raise GenerationError(f"document {location}: not found")
    kept: list[Document] = []
    for doc in docs:
        if doc.text.strip():
            kept.append(doc)
        else:
            warnings.append(f"document {doc.source}: no text found, skipped")
            log.warning("document %s has no text; skipped", doc.source)
    if not kept:
        raise GenerationError("documents " + ", ".join(locations) + ": no text found in any document")
    return kept
