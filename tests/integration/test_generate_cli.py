"""`finetune dataset generate|validate|split` against the fake LLM, including a SIGKILLed run that resumes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import pytest
from tests.fakes.fake_llm import FakeLLM

from finetune_trainer.data import load_dataset, validate_dataset
from finetune_trainer.dataset_cli import main
from finetune_trainer.generate import STATE_FILE
from finetune_trainer.generate.parsing import normalize_question

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def _docs(root: Path, n: int = 30) -> Path:
    d = root / "docs"
    d.mkdir()
    (d / "a.txt").write_text(
        " ".join(f"Paragraph {i} explains subsystem {i} of the trainer pod." for i in range(n))
    )
    (d / "b.html").write_text("<p>" + " ".join(f"Web sentence {i} about quotas." for i in range(n)) + "</p>")
    return d


def _gen_args(docs: Path, base_url: str, out: Path, *extra: str) -> list[str]:
    return [
        "generate",
        "--docs",
        str(docs),
        "--llm-base-url",
        base_url,
        "--model",
        "fake-model",
        "--chunk-size",
        "200",
        "--chunk-overlap",
        "30",
        "--questions-per-chunk",
        "2",
        "--validation-fraction",
        "0.25",
        "--output",
        str(out),
        *extra,
    ]


async def test_generate_validate_split(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    docs, out = _docs(tmp_path), tmp_path / "out"
    monkeypatch.setenv("MY_LLM_KEY", "key-from-env")
    async with FakeLLM(api_key="key-from-env") as llm:
        code = await asyncio.to_thread(
            main, _gen_args(docs, llm.base_url, out, "--api-key-env", "MY_LLM_KEY", "--concurrency", "2")
        )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = json.loads(captured.out)
    assert report["questions"] == report["train_queries"] + report["validation_queries"] > 0
    assert all(r.authorization == "Bearer key-from-env" for r in llm.chat_requests)
    assert "key-from-env" not in captured.out + captured.err
    for name in ("train.json", "val.json"):
        validate_dataset(load_dataset(str(out / name)))

    assert main(["validate", str(out / "train.json")]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["valid"] and shown["queries"] == report["train_queries"] and shown["duplicate_queries"] == 0

    assert (
        main(
            [
                "split",
                str(out / "train.json"),
                "--validation-fraction",
                "0.5",
                "--output",
                str(tmp_path / "split"),
            ]
        )
        == 0
    )
    sizes = json.loads(capsys.readouterr().out)
    a, b = load_dataset(str(tmp_path / "split/train.json")), load_dataset(str(tmp_path / "split/val.json"))
    assert (
        len(a.queries) + len(b.queries)
        == report["train_queries"]
        == sizes["train_queries"] + sizes["validation_queries"]
    )
    assert not set(a.queries) & set(b.queries)


def test_validate_reports_offending_ids(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps(
            {
                "queries": {"q1": "What?", "q2": "Why?"},
                "corpus": {"d1": "text"},
                "relevant_docs": {"q1": ["d1"], "q2": ["d-missing"]},
                "mode": "text",
            }
        )
    )
    assert main(["validate", str(bad)]) == 3
    captured = capsys.readouterr()
    assert "d-missing" in captured.err
    assert json.loads(captured.out)["offending_ids"] == ["d-missing"]
    assert main(["validate", str(tmp_path / "nope.json")]) == 3
    assert "not found" in capsys.readouterr().err


def test_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "generate" in capsys.readouterr().out
    assert main(["generate", "--help"]) == 0
    assert "--llm-base-url" in capsys.readouterr().out
    assert main(["generate", "--docs", "x"]) == 2
    code = main(
        [
            "generate",
            "--docs",
            str(tmp_path),
            "--llm-base-url",
            "http://h/v1",
            "--model",
            "m",
            "--chunk-size",
            "100",
            "--chunk-overlap",
            "100",
        ]
    )
    assert code == 3
    assert "chunkOverlap must be smaller than chunkSize" in capsys.readouterr().err
    assert (
        main(
            [
                "generate",
                "--docs",
                str(tmp_path),
                "--llm-base-url",
                "http://h/v1",
                "--model",
                "m",
                "--questions-per-chunk",
                "0",
            ]
        )
        == 3
    )
    assert "--questions-per-chunk" in capsys.readouterr().err
    assert main(["split", str(tmp_path / "x.json"), "--validation-fraction", "1.5", "--output", "o"]) == 3


def test_unreachable_llm_exit_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        _gen_args(_docs(tmp_path, 3), "http://127.0.0.1:9/v1", tmp_path / "out", "--max-retries", "0")
    )
    assert code == 1
    assert "LLM at http://127.0.0.1:9/v1: unreachable" in capsys.readouterr().err


async def test_sigkilled_generation_resumes_without_duplicates(tmp_path: Path) -> None:
    docs, out = _docs(tmp_path, 60), tmp_path / "out"
    state_file = out / STATE_FILE
    async with FakeLLM(delay=0.05) as llm:
        args = _gen_args(docs, llm.base_url, out, "--concurrency", "1", "--save-every", "2")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "finetune_trainer.dataset_cli",
            *args,
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(3000):
            if state_file.exists() and len(json.loads(state_file.read_text())["chunks"]) >= 6:
                break
            if proc.returncode is not None:
                break
            await asyncio.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        assert proc.returncode == -signal.SIGKILL
        saved = set(json.loads(state_file.read_text())["chunks"])
        assert len(saved) >= 6
        assert not (out / "train.json").exists()
        first_run = len(llm.chat_requests)

        code = await asyncio.to_thread(main, args)
        assert code == 0
    report = json.loads((out / "generation_report.json").read_text())
    assert report["chunks_resumed"] == len(saved)
    assert report["chunks_generated"] == report["chunks"] - len(saved) == len(llm.chat_requests) - first_run
    questions: list[str] = []
    for name in ("train.json", "val.json"):
        questions += list(load_dataset(str(out / name)).queries.values())
    assert len({normalize_question(q) for q in questions}) == len(questions) == report["questions"]
