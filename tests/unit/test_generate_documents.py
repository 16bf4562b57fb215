"""Loading documents for dataset generation: formats, directories, bad input."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from tests.fakes.fake_llm import minimal_pdf

from finetune_trainer.generate import GenerationError, load_documents
from finetune_trainer.generate.state import GenerationState, load_state, save_state, settings_fingerprint

pytestmark = pytest.mark.unit


def _docs(tmp_path: Path) -> Path:
    d = tmp_path / "docs"
    (d / "sub").mkdir(parents=True)
    (d / "a.txt").write_text("Plain text about operators.", encoding="utf-8")
    (d / "b.md").write_text("# Heading\n\nMarkdown with [a link](http://x).", encoding="utf-8")
    (d / "sub" / "c.html").write_text("<html><body><p>HTML about GPUs.</p><script>x()</script></body></html>")
    (d / "sub" / "d.pdf").write_bytes(minimal_pdf(["PDF text about adapters."]))
    return d


def test_loads_every_format_recursively_in_order(tmp_path: Path) -> None:
    docs = load_documents([str(_docs(tmp_path))])
    assert [(Path(d.source).name, d.kind) for d in docs] == [
        ("a.txt", "text"),
        ("b.md", "markdown"),
        ("c.html", "html"),
        ("d.pdf", "pdf"),
    ]
    texts = [d.text for d in docs]
    assert texts[0] == "Plain text about operators."
    assert "Markdown with a link." in texts[1]
    assert texts[2] == "HTML about GPUs."
    assert texts[3] == "PDF text about adapters."


def test_configmap_mount_layout(tmp_path: Path) -> None:
    """A mounted ConfigMap: keys are links into a hidden ..data dir, which must not be read twice."""
    d = tmp_path / "cm"
    real = d / "..2026_01_01_00_00_00.000"
    real.mkdir(parents=True)
    (real / "guide").write_text("Extensionless key with text.", encoding="utf-8")
    os.symlink(real.name, d / "..data")
    os.symlink("..data/guide", d / "guide")
    docs = load_documents([str(d)])
    assert [(Path(x.source).name, x.text) for x in docs] == [("guide", "Extensionless key with text.")]


def test_unsupported_files_skipped_with_warning(tmp_path: Path) -> None:
    d = _docs(tmp_path)
    (d / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    warnings: list[str] = []
    assert len(load_documents([str(d)], warnings=warnings)) == 4
    assert any("image.png" in w and "unsupported" in w for w in warnings)


def test_empty_directory_is_an_error_naming_it(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(GenerationError, match=r"empty.*holds no text, Markdown, HTML or PDF"):
        load_documents([str(tmp_path / "empty")])


def test_binary_file_is_an_error_naming_it(tmp_path: Path) -> None:
    d = _docs(tmp_path)
    (d / "blob.txt").write_bytes(b"abc\x00\x01\x02def")
    with pytest.raises(GenerationError, match=r"blob\.txt: binary content"):
        load_documents([str(d)])


def test_non_utf8_file_is_an_error_naming_it(tmp_path: Path) -> None:
    f = tmp_path / "latin.txt"
    f.write_bytes("caf\xe9 cr\xe8me".encode("latin-1"))
    with pytest.raises(GenerationError, match=r"latin\.txt: not UTF-8"):
        load_documents([str(f)])


def test_broken_pdf_is_an_error_naming_it(tmp_path: Path) -> None:
    f = tmp_path / "broken.pdf"
    f.write_bytes(b"%PDF-1.4\nthis is not really a pdf")
    with pytest.raises(GenerationError, match=r"broken\.pdf"):
        load_documents([str(f)])


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file_is_an_error_naming_it(tmp_path: Path) -> None:
    f = tmp_path / "secret.txt"
    f.write_text("text")
    f.chmod(0)
    with pytest.raises(GenerationError, match=r"secret\.txt: cannot be read"):
        load_documents([str(f)])


def test_missing_path_and_no_text(tmp_path: Path) -> None:
    with pytest.raises(GenerationError, match=r"nope: not found"):
        load_documents([str(tmp_path / "nope")])
    (tmp_path / "blank.txt").write_text("   \n\n")
    with pytest.raises(GenerationError, match="no text found in any document"):
        load_documents([str(tmp_path / "blank.txt")])
    with pytest.raises(GenerationError, match="no documents given"):
        load_documents([])


def test_state_roundtrip_and_settings_change(tmp_path: Path) -> None:
    fp = settings_fingerprint("m", "{context_str} {num_questions_per_chunk}", 2)
    state = GenerationState(fingerprint=fp)
    from finetune_trainer.generate.state import ChunkResult

    state.chunks["h1"] = ChunkResult(source="a.txt", questions=["What?"], asked=2)
    state.usage = {"requests": 3}
    save_state(str(tmp_path), state)
    back = load_state(str(tmp_path), fp)
    assert back.chunks["h1"].questions == ["What?"] and back.usage == {"requests": 3}
    warnings: list[str] = []
    other = load_state(str(tmp_path), settings_fingerprint("other-model", "x", 2), warnings=warnings)
    assert other.chunks == {} and "another model" in warnings[0]
    (tmp_path / "generation_state.json").write_text("{not json")
    assert load_state(str(tmp_path), fp, warnings=warnings).chunks == {}
    assert "unreadable" in warnings[-1]
