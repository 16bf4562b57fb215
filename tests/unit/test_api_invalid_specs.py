"""Invalid FinetuneJob specs are refused by BOTH layers: the CRD schema (structural + CEL, as the API
server would) and the pydantic models (with a message naming the field path).

The server side runs in both `fieldValidation` modes that matter: Strict (kubectl) and Warn (the default of
every other client). To add a case, append `(id, base factory, mutation, field path)` to CASES; a case that
is refused only because its field is unknown also goes into PRUNED_IN_WARN."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.crdcheck import check, validate

from finetune_operator.api import SpecError, parse_job, parse_quota

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
JOB_CRD = yaml.safe_load((ROOT / "crds" / "finetune.dev_finetunejobs.yaml").read_text())
QUOTA_CRD = yaml.safe_load((ROOT / "crds" / "finetune.dev_trainingquotas.yaml").read_text())

SECRET = {"name": "openai-key", "key": "apiKey"}


def st_job() -> dict[str, Any]:
    return {
        "apiVersion": "finetune.dev/v1alpha1",
        "kind": "FinetuneJob",
        "metadata": {"name": "job", "namespace": "ml"},
        "spec": {
            "engine": {"sentenceTransformers": {"model": "BAAI/bge-small-en", "epochs": 2}},
            "dataset": {"train": {"configMap": {"name": "data", "key": "train.json"}}},
            "output": {"storageUri": "pvc://finetune-output/runs"},
        },
    }


def openai_job() -> dict[str, Any]:
    job = st_job()
    job["spec"] = {
        "engine": {"openai": {"apiKeySecretRef": dict(SECRET)}},
        "dataset": {"train": {"url": "https://example.com/train.jsonl"}},
    }
    return job


def gradient_job() -> dict[str, Any]:
    job = st_job()
    job["spec"] = {
        "engine": {
            "gradient": {
                "baseModelSlug": "llama2-7b-chat",
                "host": "https://gradient.internal",
                "accessTokenSecretRef": {"name": "gradient", "key": "token"},
            }
        },
        "dataset": {"train": {"url": "https://example.com/inputs.jsonl"}},
    }
    return job


def generate_job() -> dict[str, Any]:
    job = st_job()
    job["spec"]["dataset"] = {
        "generate": {
            "documents": [{"configMap": {"name": "docs", "key": "handbook.md"}}],
            "llm": {"baseUrl": "http://vllm.llm:8000/v1", "model": "qwen"},
        }
    }
    return job


def llm_job() -> dict[str, Any]:
    job = st_job()
    job["spec"]["engine"] = {"llm": {"baseModel": "pvc://models/qwen2.5-0.5b-instruct"}}
    job["spec"]["dataset"] = {"train": {"configMap": {"name": "chat", "key": "train.jsonl"}}}
    job["spec"]["placement"] = {"resources": {"gpu": {"count": 1}}}
    return job


Mutation = Callable[[dict[str, Any]], None]


def _set(path: str, value: Any) -> Mutation:
    def mutate(obj: dict[str, Any]) -> None:
        keys = path.split(".")
        node = obj
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value

    return mutate


def _del(path: str) -> Mutation:
    def mutate(obj: dict[str, Any]) -> None:
        keys = path.split(".")
        node = obj
        for key in keys[:-1]:
            node = node[key]
        del node[keys[-1]]

    return mutate


# (case id, base factory, mutation, field path the pydantic error must name)
CASES: list[tuple[str, Callable[[], dict[str, Any]], Mutation, str]] = [
    ("two-engines", st_job, _set("spec.engine.adapter", {}), "spec.engine"),
    ("no-engine", st_job, _set("spec.engine", {}), "spec.engine"),
    (
        "negative-epochs",
        st_job,
        _set("spec.engine.sentenceTransformers.epochs", -1),
        "spec.engine.sentenceTransformers.epochs",
    ),
    (
        "zero-batch",
        st_job,
        _set("spec.engine.sentenceTransformers.batchSize", 0),
        "spec.engine.sentenceTransformers.batchSize",
    ),
    (
        "negative-lr",
        st_job,
        _set("spec.engine.sentenceTransformers.learningRate", -0.1),
        "spec.engine.sentenceTransformers.learningRate",
    ),
    (
        "unknown-loss",
        st_job,
        _set("spec.engine.sentenceTransformers.loss", "TripletLoss"),
        "spec.engine.sentenceTransformers.loss",
    ),
    (
        "unknown-precision",
        st_job,
        _set("spec.engine.sentenceTransformers.precision", "fp8"),
        "spec.engine.sentenceTransformers.precision",
    ),
    (
        "epochs-as-string",
        st_job,
        _set("spec.engine.sentenceTransformers.epochs", "two"),
        "spec.engine.sentenceTransformers.epochs",
    ),
    (
        "unknown-adapter-kind",
        st_job,
        _set("spec.engine", {"adapter": {"adapter": {"kind": "threeLayer"}}}),
        "spec.engine.adapter.adapter.kind",
    ),
    (
        "linear-with-hidden-size",
        st_job,
        _set("spec.engine", {"adapter": {"adapter": {"hiddenSize": 64}}}),
        "spec.engine.adapter.adapter",
    ),
    (
        "adapter-bad-continue-uri",
        st_job,
        _set("spec.engine", {"adapter": {"continueFrom": "/tmp/adapter"}}),
        "spec.engine.adapter.continueFrom",
    ),
    (
        "inline-openai-api-key",
        openai_job,
        _set("spec.engine.openai.apiKey", "sk-live-123"),
        "spec.engine.openai.apiKey",
    ),
    (
        "openai-missing-key-ref",
        openai_job,
        _del("spec.engine.openai.apiKeySecretRef"),
        "spec.engine.openai.apiKeySecretRef",
    ),
    (
        "openai-bad-lr-multiplier",
        openai_job,
        _set("spec.engine.openai.hyperparameters", {"learningRateMultiplier": "fast"}),
        "spec.engine.openai.hyperparameters.learningRateMultiplier",
    ),
    (
        "openai-bad-base-url",
        openai_job,
        _set("spec.engine.openai.endpoint", {"baseUrl": "api.openai.com"}),
        "spec.engine.openai.endpoint.baseUrl",
    ),
    (
        "secret-ref-bad-name",
        openai_job,
        _set("spec.engine.openai.apiKeySecretRef", {"name": "My_Key", "key": "k"}),
        "spec.engine.openai.apiKeySecretRef.name",
    ),
    (
        "gradient-both-models",
        gradient_job,
        _set("spec.engine.gradient.modelAdapterId", "abc"),
        "spec.engine.gradient",
    ),
    ("gradient-no-model", gradient_job, _del("spec.engine.gradient.baseModelSlug"), "spec.engine.gradient"),
    (
        "gradient-inline-token",
        gradient_job,
        _set("spec.engine.gradient.accessToken", "tok"),
        "spec.engine.gradient.accessToken",
    ),
    (
        "malformed-storage-uri",
        st_job,
        _set("spec.output.storageUri", "ftp://bucket/x"),
        "spec.output.storageUri",
    ),
    (
        "storage-uri-without-scheme",
        st_job,
        _set("spec.output.storageUri", "/data/out"),
        "spec.output.storageUri",
    ),
    ("zero-checkpoint-steps", st_job, _set("spec.output.checkpointSteps", 0), "spec.output.checkpointSteps"),
    ("zero-keep-checkpoints", st_job, _set("spec.output.keepCheckpoints", 0), "spec.output.keepCheckpoints"),
    ("in-cluster-without-output", st_job, _del("spec.output"), "spec"),
    ("in-cluster-without-dataset", st_job, _del("spec.dataset"), "spec"),
    (
        "train-and-generate",
        generate_job,
        _set("spec.dataset.train", {"url": "https://x.example/t.json"}),
        "spec.dataset",
    ),
    ("neither-train-nor-generate", st_job, _set("spec.dataset", {"validationSplit": 0.2}), "spec.dataset"),
    (
        "two-data-sources",
        st_job,
        _set("spec.dataset.train.url", "https://x.example/t.json"),
        "spec.dataset.train",
    ),
    (
        "ftp-data-url",
        st_job,
        _set("spec.dataset.train", {"url": "ftp://x.example/t.json"}),
        "spec.dataset.train.url",
    ),
    (
        "configmap-without-key",
        st_job,
        _set("spec.dataset.train", {"configMap": {"name": "data"}}),
        "spec.dataset.train.configMap.key",
    ),
    (
        "pvc-path-escape",
        st_job,
        _set("spec.dataset.train", {"pvc": {"claimName": "data", "path": "../etc/x"}}),
        "spec.dataset.train.pvc.path",
    ),
    (
        "validation-split-one",
        st_job,
        _set("spec.dataset.validationSplit", 1.0),
        "spec.dataset.validationSplit",
    ),
    ("format-mismatch", st_job, _set("spec.dataset.format", "chat"), "spec"),
    ("hosted-without-dataset", openai_job, _del("spec.dataset"), "spec"),
    (
        "generate-with-hosted-engine",
        generate_job,
        _set("spec.engine", {"openai": {"apiKeySecretRef": dict(SECRET)}}),
        "spec",
    ),
    (
        "generate-overlap-too-big",
        generate_job,
        _set("spec.dataset.generate.chunkOverlap", 5000),
        "spec.dataset.generate",
    ),
    (
        "generate-prompt-without-placeholders",
        generate_job,
        _set("spec.dataset.generate.promptTemplate", "Write questions."),
        "spec.dataset.generate.promptTemplate",
    ),
    (
        "generate-no-documents",
        generate_job,
        _set("spec.dataset.generate.documents", []),
        "spec.dataset.generate.documents",
    ),
    (
        "negative-gpu-count",
        st_job,
        _set("spec.placement", {"resources": {"gpu": {"count": -1}}}),
        "spec.placement.resources.gpu.count",
    ),
    (
        "bad-gpu-resource-name",
        st_job,
        _set("spec.placement", {"resources": {"gpu": {"resourceName": "gpu"}}}),
        "spec.placement.resources.gpu.resourceName",
    ),
    (
        "bad-memory-quantity",
        st_job,
        _set("spec.placement", {"resources": {"memory": "lots"}}),
        "spec.placement.resources.memory",
    ),
    (
        "bad-toleration-operator",
        st_job,
        _set("spec.placement", {"tolerations": [{"operator": "Maybe"}]}),
        "spec.placement.tolerations[0].operator",
    ),
    (
        "negative-backoff-limit",
        st_job,
        _set("spec.runPolicy", {"backoffLimit": -1}),
        "spec.runPolicy.backoffLimit",
    ),
    (
        "zero-deadline",
        st_job,
        _set("spec.runPolicy", {"activeDeadlineSeconds": 0}),
        "spec.runPolicy.activeDeadlineSeconds",
    ),
    (
        "bad-queue-name",
        st_job,
        _set("spec.runPolicy", {"queueName": "Bad_Queue"}),
        "spec.runPolicy.queueName",
    ),
    ("suspend-as-string", st_job, _set("spec.runPolicy", {"suspend": "yes"}), "spec.runPolicy.suspend"),
    ("unknown-spec-field", st_job, _set("spec.epochs", 3), "spec.epochs"),
    ("llm-unknown-method", llm_job, _set("spec.engine.llm.method", "ppo"), "spec.engine.llm.method"),
    ("llm-zero-rank", llm_job, _set("spec.engine.llm.lora", {"rank": 0}), "spec.engine.llm.lora.rank"),
    (
        "llm-dropout-one",
        llm_job,
        _set("spec.engine.llm.lora", {"dropout": 1.0}),
        "spec.engine.llm.lora.dropout",
    ),
    (
        "llm-bad-target-module",
        llm_job,
        _set("spec.engine.llm.lora", {"targetModules": ["q proj"]}),
        "spec.engine.llm.lora.targetModules[0]",
    ),
    ("llm-8bit", llm_job, _set("spec.engine.llm.quantization", "8bit"), "spec.engine.llm.quantization"),
    ("llm-no-base-model", llm_job, _del("spec.engine.llm.baseModel"), "spec.engine.llm.baseModel"),
    ("llm-zero-epochs", llm_job, _set("spec.engine.llm.epochs", 0), "spec.engine.llm.epochs"),
    ("llm-tiny-seq-length", llm_job, _set("spec.engine.llm.maxSeqLength", 4), "spec.engine.llm.maxSeqLength"),
    ("llm-no-output", llm_job, _del("spec.output"), "spec"),
    ("llm-embedding-data", llm_job, _set("spec.dataset.format", "embeddingQA"), "spec"),
    ("llm-sft-with-preference-data", llm_job, _set("spec.dataset.format", "preference"), "spec"),
    ("openai-with-preference-data", openai_job, _set("spec.dataset.format", "preference"), "spec"),
]


def _dpo_with_chat_data(obj: dict[str, Any]) -> None:
    obj["spec"]["engine"]["llm"]["method"] = "dpo"
    obj["spec"]["dataset"]["format"] = "chat"


def _llm_generate(obj: dict[str, Any]) -> None:
    obj["spec"]["dataset"] = generate_job()["spec"]["dataset"]


def _llm_4bit_on_cpu(obj: dict[str, Any]) -> None:
    obj["spec"]["engine"]["llm"]["quantization"] = "4bit"
    obj["spec"]["placement"] = {"resources": {"gpu": {"count": 0}, "cpu": "8"}}


CASES += [
    ("llm-dpo-with-chat-data", llm_job, _dpo_with_chat_data, "spec"),
    ("llm-generate", llm_job, _llm_generate, "spec"),
    ("llm-4bit-on-cpu", llm_job, _llm_4bit_on_cpu, "spec"),
]


def _many_documents(obj: dict[str, Any]) -> None:
    obj["spec"]["dataset"]["generate"]["documents"] = [
        {"configMap": {"name": "docs", "key": f"doc-{i}.md"}} for i in range(65)
    ]


# Bounds (maxLength / maxItems / maxProperties) and inline credentials.
CASES += [
    (
        "secret-name-too-long",
        openai_job,
        _set("spec.engine.openai.apiKeySecretRef", {"name": "a" * 254, "key": "k"}),
        "spec.engine.openai.apiKeySecretRef.name",
    ),
    (
        "storage-uri-too-long",
        st_job,
        _set("spec.output.storageUri", "s3://bucket/" + "x" * 2048),
        "spec.output.storageUri",
    ),
    ("too-many-documents", generate_job, _many_documents, "spec.dataset.generate.documents"),
    (
        "prompt-too-long",
        generate_job,
        _set(
            "spec.dataset.generate.promptTemplate",
            "{context_str} {num_questions_per_chunk} " + "x" * 40000,
        ),
        "spec.dataset.generate.promptTemplate",
    ),
    (
        "label-value-too-long",
        st_job,
        _set("spec.placement", {"nodeSelector": {"pool": "x" * 64}}),
        "spec.placement.nodeSelector.pool",
    ),
    (
        "too-many-node-labels",
        st_job,
        _set("spec.placement", {"nodeSelector": {f"k{i}": "v" for i in range(65)}}),
        "spec.placement.nodeSelector",
    ),
    ("openai-inline-token", openai_job, _set("spec.engine.openai.token", "sk-1"), "spec.engine.openai.token"),
    (
        "openai-endpoint-inline-api-key",
        openai_job,
        _set("spec.engine.openai.endpoint", {"apiKey": "sk-1"}),
        "spec.engine.openai.endpoint.apiKey",
    ),
    (
        "gradient-inline-token-short-name",
        gradient_job,
        _set("spec.engine.gradient.token", "tok"),
        "spec.engine.gradient.token",
    ),
    (
        "generate-llm-inline-api-key",
        generate_job,
        _set("spec.dataset.generate.llm.apiKey", "sk-1"),
        "spec.dataset.generate.llm.apiKey",
    ),
    (
        "generate-llm-inline-token",
        generate_job,
        _set("spec.dataset.generate.llm.token", "sk-1"),
        "spec.dataset.generate.llm.token",
    ),
    (
        "s3-inline-access-key-id",
        st_job,
        _set("spec.s3", {"accessKeyId": "AKIA0000"}),
        "spec.s3.accessKeyId",
    ),
    (
        "s3-inline-secret-access-key",
        st_job,
        _set("spec.s3", {"secretAccessKey": "wJalr"}),
        "spec.s3.secretAccessKey",
    ),
    (
        "data-url-with-credentials",
        st_job,
        _set("spec.dataset.train", {"url": "https://alice:hunter2@data.example.com/train.json"}),
        "spec.dataset.train.url",
    ),
    (
        "llm-base-url-with-credentials",
        generate_job,
        _set("spec.dataset.generate.llm.baseUrl", "http://user:sk-1@vllm.llm:8000/v1"),
        "spec.dataset.generate.llm.baseUrl",
    ),
    (
        "s3-endpoint-with-credentials",
        st_job,
        _set("spec.s3", {"endpointUrl": "https://AKIA:secret@minio.local:9000"}),
        "spec.s3.endpointUrl",
    ),
    (
        "s3-inline-session-token",
        st_job,
        _set("spec.s3", {"sessionToken": "FQoG"}),
        "spec.s3.sessionToken",
    ),
]

# Cases refused only because a field is unknown. A real API server in fieldValidation=Warn (the default of
# controllers, GitOps tools and client libraries) prunes such a field with a warning and stores the rest, so
# the operator only ever sees the pruned object, which is valid. kubectl sends Strict and gets the error.
PRUNED_IN_WARN = {"unknown-spec-field"}

MODES = ("Strict", "Warn")


def test_table_is_large_enough() -> None:
    assert len(CASES) >= 30
    assert len({c[0] for c in CASES}) == len(CASES)
    assert {c[0] for c in CASES} >= PRUNED_IN_WARN


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("base", [st_job, openai_job, gradient_job, generate_job, llm_job])
def test_valid_bases_pass_both_layers(base: Callable[[], dict[str, Any]], mode: str) -> None:
    body = base()
    result = check(body, JOB_CRD, field_validation=mode)
    assert result.errors == [] and result.warnings == []
    parse_job(body)
    parse_job(result.obj)  # the object the server stores, defaults applied


def _names(errors: list[str], field: str) -> bool:
    """Whether a server error names `field` (or a field below it)."""
    return any(
        e.split(": ", 1)[0].startswith(field) or e.startswith(f'unknown field "{field}') for e in errors
    )


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("case", "base", "mutate", "field"), CASES, ids=[c[0] for c in CASES])
def test_invalid_spec_refused_by_both_layers(
    case: str, base: Callable[[], dict[str, Any]], mutate: Mutation, field: str, mode: str
) -> None:
    body = base()
    mutate(body)
    result = check(body, JOB_CRD, field_validation=mode)
    if mode == "Warn" and case in PRUNED_IN_WARN:
        assert result.errors == [], f"{case}: {result.errors}"
        assert f'unknown field "{field}"' in result.warnings
        parse_job(result.obj)  # what the operator reads back is valid
    else:
        assert result.errors, f"{case}: the CRD schema accepted an invalid spec in {mode} mode"
        assert _names(result.errors, field), f"{case}: {result.errors} do not name {field}"
    with pytest.raises(SpecError) as info:
        parse_job(body)
    assert field in info.value.fields, f"{case}: {info.value.fields} does not name {field}"
    assert field in str(info.value)


def test_immutable_after_start_except_run_policy() -> None:
    old = st_job()
    old["status"] = {"phase": "Running", "startTime": "2026-11-26T10:00:00Z"}
    changed = copy.deepcopy(old)
    changed["spec"]["engine"]["sentenceTransformers"]["epochs"] = 9
    assert any("immutable" in e for e in validate(changed, JOB_CRD, old))
    suspended = copy.deepcopy(old)
    suspended["spec"]["runPolicy"] = {"suspend": True}
    assert validate(suspended, JOB_CRD, old) == []
    not_started = st_job()
    assert validate(changed, JOB_CRD, not_started) == []


def _refused_fields(node: dict[str, Any], path: str, out: list[str]) -> None:
    if any(r.get("rule") == "false" for r in node.get("x-kubernetes-validations", [])):
        out.append(path)
    for key, sub in node.get("properties", {}).items():
        _refused_fields(sub, f"{path}.{key}" if path else key, out)
    if isinstance(node.get("items"), dict):
        _refused_fields(node["items"], f"{path}[0]", out)


def test_every_declared_credential_field_is_in_the_table() -> None:
    schema = JOB_CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    declared: list[str] = []
    _refused_fields(schema, "", declared)
    assert len(declared) >= 10
    covered = {c[3] for c in CASES}
    assert [f for f in declared if f not in covered] == []


@pytest.mark.parametrize("mode", ("Strict", "Warn", "Ignore"))
def test_inline_secret_message_says_use_a_secret_key_ref(mode: str) -> None:
    body = openai_job()
    body["spec"]["engine"]["openai"]["apiKey"] = "sk-live-123"
    result = check(body, JOB_CRD, field_validation=mode)
    assert result.warnings == []  # declared, so never silently pruned
    assert len(result.errors) == 1
    assert result.errors[0].startswith("spec.engine.openai.apiKey: ")
    assert "use a secretKeyRef (apiKeySecretRef" in result.errors[0]
    assert "sk-live-123" not in str(result.status("FinetuneJob", "finetune.dev", "job"))
    with pytest.raises(SpecError) as info:
        parse_job(body)
    assert info.value.fields == ["spec.engine.openai.apiKey"]
    assert "use a secretKeyRef (apiKeySecretRef" in str(info.value)
    assert "sk-live-123" not in str(info.value)


QUOTA_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("negative-gpus", {"limits": {"gpus": [{"count": -1}]}}, "spec.limits.gpus[0].count"),
    (
        "bad-window",
        {"limits": {"hostedTokens": [{"tokens": 10, "window": "a day"}]}},
        "spec.limits.hostedTokens[0].window",
    ),
    (
        "bad-selector-operator",
        {"namespaceSelector": {"matchExpressions": [{"key": "team", "operator": "Like"}]}},
        "spec.namespaceSelector.matchExpressions[0].operator",
    ),
    ("unknown-limit", {"limits": {"maxGpus": 4}}, "spec.limits.maxGpus"),
    ("negative-max-jobs", {"limits": {"maxJobs": -2}}, "spec.limits.maxJobs"),
]


QUOTA_PRUNED_IN_WARN = {"unknown-limit"}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("case", "spec", "field"), QUOTA_CASES, ids=[c[0] for c in QUOTA_CASES])
def test_invalid_quota_refused_by_both_layers(case: str, spec: dict[str, Any], field: str, mode: str) -> None:
    body = {
        "apiVersion": "finetune.dev/v1alpha1",
        "kind": "TrainingQuota",
        "metadata": {"name": "q"},
        "spec": spec,
    }
    result = check(body, QUOTA_CRD, field_validation=mode)
    if mode == "Warn" and case in QUOTA_PRUNED_IN_WARN:
        assert result.errors == [] and f'unknown field "{field}"' in result.warnings
        parse_quota(result.obj)
    else:
        assert _names(result.errors, field), f"{case}: {result.errors}"
    with pytest.raises(SpecError) as info:
        parse_quota(body)
    assert field in info.value.fields


def test_valid_quota() -> None:
    body = {
        "apiVersion": "finetune.dev/v1alpha1",
        "kind": "TrainingQuota",
        "metadata": {"name": "team-a"},
        "spec": {
            "namespaceSelector": {"matchLabels": {"team": "a"}},
            "limits": {
                "maxJobs": 4,
                "gpus": [{"resourceName": "nvidia.com/gpu", "count": 8}],
                "hostedTokens": [{"provider": "openai", "tokens": 5000000, "window": "30d"}],
            },
        },
    }
    assert validate(body, QUOTA_CRD) == []
    assert parse_quota(body).spec.limits.max_jobs == 4
