"""`finetune local` end to end: emulator + real operator + the real trainer as a local process (CPU)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]


def test_finetune_local_adapter_job(tmp_path: Path) -> None:
    """A small adapter job on the bundled sample data: Succeeded, with metrics and a saved model."""
    job = yaml.safe_load((ROOT / "examples/quickstart/adapter-job.yaml").read_text())
    job["metadata"]["name"] = "e2e-adapter"
    job["spec"]["engine"]["adapter"]["epochs"] = 1
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (manifests / "job.yaml").write_text(yaml.safe_dump(job))
    (manifests / "dataset.yaml").write_text((ROOT / "examples/quickstart/dataset.yaml").read_text())
    workdir = tmp_path / "work"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "finetune_operator.cli",
            "local",
            str(manifests),
            "--workdir",
            str(workdir),
            "--timeout",
            "500",
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=560,
        env={"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "default/e2e-adapter" in proc.stdout and "Succeeded" in proc.stdout
    assert "MRR@10" in proc.stdout
    model = workdir / "pvc/finetune-output/quickstart/default/e2e-adapter"
    assert (model / "result.json").exists()
    assert any((model / "model").iterdir())
