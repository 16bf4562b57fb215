"""`finetune local` end to end: emulator + real operator + the real trainer as a local process (CPU)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from tests.e2e.local_support import ROOT, run_local, write_manifests

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(600)]


def test_finetune_local_adapter_job(tmp_path: Path) -> None:
    """A small adapter job on the bundled sample data: Succeeded, with metrics and a saved model."""
    job = yaml.safe_load((ROOT / "examples/quickstart/adapter-job.yaml").read_text())
    job["metadata"]["name"] = "e2e-adapter"
    job["spec"]["engine"]["adapter"]["epochs"] = 1
    manifests = write_manifests(
        tmp_path,
        {
            "job.yaml": yaml.safe_dump(job),
            "dataset.yaml": (ROOT / "examples/quickstart/dataset.yaml").read_text(),
        },
    )
    workdir = tmp_path / "work"
    proc = run_local(
        manifests,
        workdir,
        env={"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "default/e2e-adapter" in proc.stdout and "Succeeded" in proc.stdout
    assert "MRR@10" in proc.stdout
    model = workdir / "pvc/finetune-output/quickstart/default/e2e-adapter"
    assert (model / "result.json").exists()
    assert any((model / "model").iterdir())
