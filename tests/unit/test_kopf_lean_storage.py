"""The operator's kopf storages build and clear essences exactly as kopf's own do (only cheaper)."""

from __future__ import annotations

import copy
import json
from typing import Any

import kopf
import pytest

from finetune_operator.config import Settings
from finetune_operator.main import configure_kopf
from finetune_operator.naming import ANNOTATION_PREFIX

pytestmark = pytest.mark.unit

BODY: dict[str, Any] = {
    "apiVersion": "finetune.dev/v1alpha1",
    "kind": "FinetuneJob",
    "metadata": {
        "name": "j",
        "namespace": "ns",
        "uid": "u",
        "resourceVersion": "7",
        "generation": 2,
        "labels": {"team": "a"},
        "annotations": {
            "note": "kept",
            f"{ANNOTATION_PREFIX}/last-handled-configuration": json.dumps({"spec": {"x": 1}}),
            f"{ANNOTATION_PREFIX}/changed": json.dumps({"started": "2026-01-01T00:00:00"}),
            "kubectl.kubernetes.io/last-applied-configuration": "{}",
        },
        "finalizers": [f"{ANNOTATION_PREFIX}/finalizer"],
        "ownerReferences": [{"kind": "Thing", "name": "t", "uid": "o"}],
    },
    "spec": {"engine": {"openai": {}}, "empty": {}},
    "status": {"phase": "Running", "conditions": [{"type": "Admitted", "status": "True"}]},
}


def test_essence_and_clear_are_kopfs() -> None:
    ours = kopf.OperatorSettings()
    configure_kopf(Settings(), ours)
    theirs_diffbase = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATION_PREFIX, key="last-handled-configuration"
    )
    theirs_progress = kopf.AnnotationsProgressStorage(prefix=ANNOTATION_PREFIX)
    body = kopf.Body(copy.deepcopy(BODY))  # type: ignore[arg-type]
    expected = theirs_diffbase.build(body=body)
    got = ours.persistence.diffbase_storage.build(body=body)
    assert got == expected
    assert "status" not in got and got["metadata"]["labels"] == {"team": "a"}
    assert ours.persistence.progress_storage.clear(essence=got) == theirs_progress.clear(
        essence=copy.deepcopy(expected)
    )
    assert dict(body) == BODY  # the body is left alone (the essence's metadata is a copy)
    stored = ours.persistence.diffbase_storage.fetch(body=body)
    assert stored == theirs_diffbase.fetch(body=body) == {"spec": {"x": 1}}
