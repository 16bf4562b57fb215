"""The offline kube-apiserver validator (finetune_operator.local.crdvalidation) behaves like the server:
fieldValidation modes, defaulting, nulls, the status subresource, field-error wording, blocking errors,
transition rules and ratcheting."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from finetune_operator.api.crdgen import finetunejob_crd
from finetune_operator.local.crdvalidation import validate

pytestmark = pytest.mark.unit

CRD = finetunejob_crd()


def job(**spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "finetune.dev/v1alpha1",
        "kind": "FinetuneJob",
        "metadata": {"name": "job", "namespace": "ml"},
        "spec": {
            "engine": {"adapter": {}},
            "dataset": {"train": {"configMap": {"name": "data", "key": "train.json"}}},
            "output": {"storageUri": "pvc://out/runs"},
        },
    }
    body["spec"].update(spec)
    return body


def test_warn_prunes_unknown_fields_with_one_warning_each() -> None:
    body = job(epochs=3)
    body["spec"]["placement"] = {"tolerations": [{"key": "gpu", "colour": "red"}]}
    result = validate(CRD, body)
    assert result.ok, result.errors
    assert result.warnings == [
        'unknown field "spec.epochs"',
        'unknown field "spec.placement.tolerations[0].colour"',
    ]
    assert "epochs" not in result.obj["spec"]
    assert "colour" not in result.obj["spec"]["placement"]["tolerations"][0]


def test_strict_refuses_unknown_fields_as_a_decoding_error() -> None:
    result = validate(CRD, job(epochs=3), field_validation="Strict")
    assert result.code == 400
    assert result.errors == ['unknown field "spec.epochs"']
    status = result.status("FinetuneJob", "finetune.dev", "job")
    assert status["reason"] == "BadRequest"
    assert 'strict decoding error: unknown field "spec.epochs"' in status["message"]


def test_ignore_prunes_silently() -> None:
    result = validate(CRD, job(epochs=3), field_validation="Ignore")
    assert result.ok and result.warnings == [] and "epochs" not in result.obj["spec"]
    with pytest.raises(ValueError, match="fieldValidation"):
        validate(CRD, job(), field_validation="Lenient")


def test_defaults_and_nulls() -> None:
    body = job(seed=None, s3=None)
    result = validate(CRD, body)
    assert result.ok, result.errors
    spec = result.obj["spec"]
    assert spec["seed"] == 42  # a null with a default is defaulted
    assert "s3" not in spec  # a null without a default is dropped
    assert spec["engine"]["adapter"]["epochs"] == 4  # the CRD's default, from the models


def test_field_error_wording_is_the_servers() -> None:
    body = job()
    body["spec"]["engine"] = {"adapter": {"epochs": -1, "adapter": {"kind": "threeLayer"}}}
    body["spec"]["output"]["storageUri"] = "ftp://x"
    body["spec"]["seed"] = "forty"
    result = validate(CRD, body)
    assert result.code == 422
    errors = set(result.errors)
    assert (
        "spec.engine.adapter.epochs: Invalid value: -1: spec.engine.adapter.epochs in body should be "
        "greater than or equal to 1"
    ) in errors
    assert (
        'spec.engine.adapter.adapter.kind: Unsupported value: "threeLayer": supported values: "linear", '
        '"twoLayer"'
    ) in errors
    assert 'spec.seed: Invalid value: "forty": spec.seed in body must be of type integer: "string"' in errors
    assert any(
        e.startswith(
            'spec.output.storageUri: Invalid value: "ftp://x": spec.output.storageUri in body should match'
        )
        for e in errors
    )
    # a blocking error (type, enum) means the CEL rules did not run, and the server says so
    assert result.errors[-1] == (
        '<nil>: Invalid value: "null": some validation rules were not checked because the object was '
        "invalid; correct the existing errors to complete validation"
    )
    causes = result.status("FinetuneJob", "finetune.dev", "job")["details"]["causes"]
    assert {"reason": "FieldValueNotSupported", "field": "spec.engine.adapter.adapter.kind"} in [
        {"reason": c["reason"], "field": c["field"]} for c in causes
    ]


def test_required_and_cel_rule_errors() -> None:
    body = job()
    del body["spec"]["output"]["storageUri"]
    assert validate(CRD, body).errors[0] == "spec.output.storageUri: Required value"
    body = job()
    body["spec"]["engine"] = {"adapter": {}, "sentenceTransformers": {}}
    errors = validate(CRD, body).errors
    assert len(errors) == 1
    assert errors[0].startswith('spec.engine: Invalid value: "object": set exactly one engine: ')


def test_status_subresource_semantics() -> None:
    body = job()
    body["status"] = {"phase": "Succeeded"}
    created = validate(CRD, body)
    assert "status" not in created.obj  # a create drops status
    old = copy.deepcopy(created.obj)
    old["status"] = {"phase": "Running"}
    main_update = validate(CRD, body, old=old)
    assert main_update.obj["status"] == {"phase": "Running"}  # the main resource cannot change status
    changed = copy.deepcopy(body)
    changed["spec"]["seed"] = 7
    status_update = validate(CRD, changed, old=old, subresource="status")
    assert status_update.obj["status"] == {"phase": "Succeeded"}
    assert status_update.obj["spec"]["seed"] == 42  # the status subresource cannot change spec


def test_transition_rule_and_ratcheting() -> None:
    old = validate(CRD, job()).obj
    old["status"] = {"startTime": "2026-11-26T10:00:00Z"}
    changed = copy.deepcopy(old)
    changed["spec"]["seed"] = 7
    assert any("immutable" in e for e in validate(CRD, changed, old=old).errors)
    # ratcheting: an existing value that a newer schema refuses may stay as it is
    tight = copy.deepcopy(CRD)
    seed = tight["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"][
        "seed"
    ]
    seed["maximum"] = 10
    unchanged = copy.deepcopy(old)
    unchanged["spec"]["runPolicy"] = {"suspend": True}
    assert validate(tight, unchanged, old=old).ok
    assert validate(tight, job()).errors  # a new object gets the new bound
