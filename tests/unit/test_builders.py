"""Builders: golden manifests, security, secrets only by reference, determinism, name limits."""

from __future__ import annotations

import copy
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from finetune_operator.api import FinetuneJob, parse_job
from finetune_operator.api.trainerconfig import TrainerConfig
from finetune_operator.builders import (
    SA_CA_PATH,
    SA_TOKEN_PATH,
    build_config_map,
    build_rbac,
    build_trainer_config,
    build_trainer_job,
    owner_reference,
)
from finetune_operator.config import Settings
from finetune_operator.naming import (
    config_map_name,
    dns_label,
    role_name,
    service_account_name,
    trainer_job_name,
)

pytestmark = pytest.mark.unit
GOLDEN = Path(__file__).parent / "golden"
SECRET_LIKE = re.compile(r"(sk-|sk_|Bearer |ghp_|xoxb-|AKIA)")


def make_job(spec: dict[str, Any], name: str = "demo", namespace: str = "team-a") -> FinetuneJob:
    return parse_job(
        {
            "apiVersion": "finetune.dev/v1alpha1",
            "kind": "FinetuneJob",
            "metadata": {"name": name, "namespace": namespace, "uid": "0000-uid-1", "generation": 1},
            "spec": spec,
        }
    )


ST_SPEC: dict[str, Any] = {
    "engine": {"sentenceTransformers": {"model": "BAAI/bge-small-en", "epochs": 1}},
    "dataset": {
        "train": {"configMap": {"name": "qa-data", "key": "train.json"}},
        "validation": {"configMap": {"name": "qa-data", "key": "val.json"}},
    },
    "output": {"storageUri": "pvc://models/finetunes"},
}

ADAPTER_SPEC: dict[str, Any] = {
    "engine": {
        "adapter": {"baseModel": "pvc://base-models/minilm", "continueFrom": "s3://bucket/adapters/x"}
    },
    "dataset": {
        "generate": {
            "documents": [
                {"pvc": {"claimName": "docs", "path": "corpus/a.pdf"}},
                {"url": "https://example.com/b.md"},
                {"pvc": {"claimName": "models", "path": "docs/c.txt"}},
            ],
            "llm": {
                "baseUrl": "http://vllm.llm:8000/v1",
                "model": "llama",
                "apiKeySecretRef": {"name": "llm-key", "key": "apiKey"},
            },
        }
    },
    "output": {"storageUri": "pvc://models/adapters", "checkpointSteps": 25, "keepCheckpoints": 2},
    "s3": {
        "endpointUrl": "http://minio.storage:9000",
        "region": "eu-west-1",
        "credentialsSecretRef": {"name": "s3-creds"},
    },
    "placement": {
        "resources": {"gpu": {"count": 2, "resourceName": "amd.com/gpu"}, "cpu": "8", "memory": "32Gi"},
        "nodeSelector": {"gpu": "mi300", "zone": "a"},
        "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "gpu", "operator": "In", "values": ["mi300"]}]}
                    ]
                }
            }
        },
        "priorityClassName": "high",
        "image": "registry.local/trainer:dev",
        "imagePullSecrets": [{"name": "regcred"}],
        "serviceAccountName": "cloud-identity",
    },
    "runPolicy": {"backoffLimit": 2, "queueName": "gpu-queue"},
}


def _all_objects(job: FinetuneJob, settings: Settings) -> dict[str, Any]:
    config = build_trainer_config(job, settings, 1)
    return {
        "configMap": build_config_map(job, settings, config),
        "rbac": build_rbac(job, settings),
        "job": build_trainer_job(job, settings, 1, config),
    }


@pytest.mark.parametrize(
    ("case", "spec", "settings"),
    [
        ("sentence_transformers", ST_SPEC, Settings()),
        ("adapter_all_placement", ADAPTER_SPEC, Settings(kueue_mode=True, trainer_hf_hub_offline=True)),
    ],
)
def test_golden(case: str, spec: dict[str, Any], settings: Settings) -> None:
    got = _all_objects(make_job(spec), settings)
    path = GOLDEN / f"{case}.json"
    text = json.dumps(got, indent=2, sort_keys=True) + "\n"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.write_text(text)
    if not path.exists():
        pytest.fail(f"{path} is missing; generate it with UPDATE_GOLDEN=1")
    assert text == path.read_text(), f"{path} differs; regenerate with UPDATE_GOLDEN=1 if intended"


def _walk(obj: Any, path: str = "") -> list[tuple[str, Any]]:
    out = [(path, obj)]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _walk(v, f"{path}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _walk(v, f"{path}[{i}]")
    return out


@pytest.mark.parametrize("spec", [ST_SPEC, ADAPTER_SPEC])
def test_secrets_only_by_reference(spec: dict[str, Any]) -> None:
    objs = _all_objects(make_job(spec), Settings())
    for path, value in _walk(objs):
        if isinstance(value, str):
            assert not SECRET_LIKE.search(value), path
        if isinstance(value, dict) and "secretRef" in value:
            pytest.fail(f"envFrom secretRef at {path}")
    env = objs["job"]["spec"]["template"]["spec"]["containers"][0]["env"]
    secret_env = [e for e in env if "valueFrom" in e]
    for e in env:
        assert ("value" in e) != ("valueFrom" in e)
        if re.search(r"(_KEY|SECRET|_TOKEN$|PASSWORD)", e["name"]):
            assert "secretKeyRef" in e.get("valueFrom", {}), e
    if spec is ADAPTER_SPEC:
        names = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in secret_env}
        assert names["FINETUNE_LLM_API_KEY"] == {"name": "llm-key", "key": "apiKey"}
        assert names["AWS_SECRET_ACCESS_KEY"]["name"] == "s3-creds"
    assert "Secret" not in {o["kind"] for o in objs["rbac"]}


def test_security_context() -> None:
    job = build_trainer_job(make_job(ADAPTER_SPEC), Settings(), 1)
    pod = job["spec"]["template"]["spec"]
    psc = pod["securityContext"]
    assert psc["runAsNonRoot"] is True and psc["runAsUser"] == psc["runAsGroup"] == psc["fsGroup"] == 65532
    assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
    csc = pod["containers"][0]["securityContext"]
    assert csc["allowPrivilegeEscalation"] is False and csc["readOnlyRootFilesystem"] is True
    assert csc["capabilities"] == {"drop": ["ALL"]}
    assert pod["automountServiceAccountToken"] is False and pod["restartPolicy"] == "Never"
    mounts = {m["mountPath"]: m for m in pod["containers"][0]["volumeMounts"]}
    for writable in ("/tmp", "/cache", "/output", "/dev/shm"):
        assert not mounts[writable].get("readOnly", False)
    for ro in ("/etc/finetune", "/mnt/pvc/docs", "/mnt/pvc/base-models", "/mnt/pvc/models"):
        assert mounts[ro]["readOnly"] is True
    vols = {v["name"]: v for v in pod["volumes"]}
    claims = {
        v["persistentVolumeClaim"]["claimName"]: v["persistentVolumeClaim"]["readOnly"]
        for v in vols.values()
        if "persistentVolumeClaim" in v
    }
    assert claims == {"models": False, "docs": True, "base-models": True}  # one volume per claim
    assert vols["dshm"]["emptyDir"]["medium"] == "Memory"


def test_job_policy_and_placement() -> None:
    settings = Settings(kueue_mode=True)
    job = build_trainer_job(make_job(ADAPTER_SPEC), settings, 3)
    spec = job["spec"]
    assert spec["backoffLimit"] == 0 and "activeDeadlineSeconds" not in spec
    assert "ttlSecondsAfterFinished" not in spec and spec["suspend"] is True
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-queue"
    assert job["metadata"]["name"] == "demo-a3"
    assert job["metadata"]["labels"]["finetune.dev/attempt"] == "3"
    assert job["metadata"]["ownerReferences"] == [owner_reference(make_job(ADAPTER_SPEC))]
    rules = spec["podFailurePolicy"]["rules"]
    assert {r["action"] for r in rules} == {"FailJob"}
    pod = spec["template"]["spec"]
    c = pod["containers"][0]
    assert c["resources"]["limits"]["amd.com/gpu"] == "2" == c["resources"]["requests"]["amd.com/gpu"]
    assert c["resources"]["limits"]["cpu"] == c["resources"]["requests"]["cpu"] == "8"
    assert (
        c["args"][-2:] == ["--config", "/etc/finetune/config.json"]
        and c["image"] == "registry.local/trainer:dev"
    )
    # two GPUs: torchrun, one process per GPU, in one pod
    assert c["command"] == ["python", "-m", "finetune_trainer.distributed"]
    assert "--standalone" in c["args"] and "--nproc-per-node=2" in c["args"]
    assert c["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert {e["name"]: e.get("value") for e in c["env"]}["FINETUNE_ATTEMPT"] == "3"
    assert pod["serviceAccountName"] == "cloud-identity"
    assert pod["priorityClassName"] == "high" and pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert (
        pod["nodeSelector"] == {"gpu": "mi300", "zone": "a"} and pod["tolerations"][0]["operator"] == "Exists"
    )
    assert pod["affinity"]["nodeAffinity"]
    assert pod["terminationGracePeriodSeconds"] == settings.termination_grace_period_seconds


def test_cpu_job_and_defaults() -> None:
    spec = copy.deepcopy(ST_SPEC)
    spec["placement"] = {"resources": {"gpu": {"count": 0}}}
    job = build_trainer_job(make_job(spec), Settings(kueue_mode=True), 1)
    pod = job["spec"]["template"]["spec"]
    res = pod["containers"][0]["resources"]
    assert set(res["limits"]) == {"cpu", "memory"} and set(res["requests"]) == {"cpu", "memory"}
    assert "dshm" not in {v["name"] for v in pod["volumes"]}
    assert job["spec"]["suspend"] is False  # Kueue mode, but no queueName
    assert pod["serviceAccountName"] == service_account_name("demo")
    gpu = build_trainer_job(make_job(ST_SPEC), Settings(gpu_resource_name="gpu.intel.com/xe"), 1)
    assert "gpu.intel.com/xe" in gpu["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]


def test_trainer_config_resolution() -> None:
    cfg = build_trainer_config(make_job(ADAPTER_SPEC), Settings(progress_interval_seconds=7), 2)
    assert cfg.documents == [
        "/mnt/pvc/docs/corpus/a.pdf",
        "https://example.com/b.md",
        "/mnt/pvc/models/docs/c.txt",
    ]
    assert cfg.output_dir == "/output/adapters/team-a/demo"
    assert cfg.output_uri == "pvc://models/adapters/team-a/demo"
    assert cfg.checkpoint_steps == 25 and cfg.keep_checkpoints == 2 and cfg.attempt == 2
    assert cfg.report.api_server == "https://kubernetes.default.svc"
    assert cfg.report.token_path == SA_TOKEN_PATH and cfg.report.ca_path == SA_CA_PATH
    assert cfg.report.interval_seconds == 7
    assert (
        cfg.spec.engine.adapter is not None
        and cfg.spec.engine.adapter.base_model == "/mnt/pvc/base-models/minilm"
    )
    assert cfg.s3 is not None and cfg.s3.endpoint_url == "http://minio.storage:9000"
    st = build_trainer_config(make_job(ST_SPEC), Settings(trainer_api_server="https://api:6443"), 1)
    assert st.train == "/data/qa-data/train.json" and st.validation == "/data/qa-data/val.json"
    assert (
        st.checkpoint_steps == Settings().default_checkpoint_steps
        and st.report.api_server == "https://api:6443"
    )
    s3 = copy.deepcopy(ST_SPEC)
    s3["output"] = {"storageUri": "s3://bucket/out/"}
    s3["dataset"]["train"] = {"url": "s3://bucket/data/train.json"}
    c3 = build_trainer_config(make_job(s3), Settings(), 1)
    assert c3.output_dir == c3.output_uri == "s3://bucket/out/team-a/demo"
    assert c3.train == "s3://bucket/data/train.json"
    # the config round-trips through the ConfigMap
    cm = build_config_map(make_job(ST_SPEC), Settings(), st)
    assert TrainerConfig.model_validate_json(cm["data"]["config.json"]) == st
    # the pod mounts what the config points at
    pod = build_trainer_job(make_job(ADAPTER_SPEC), Settings(), 2, cfg)["spec"]["template"]["spec"]
    mounts = [m["mountPath"] for m in pod["containers"][0]["volumeMounts"]]
    for p in [
        *cfg.documents[:1],
        cfg.documents[2],
        cfg.output_dir,
        SA_TOKEN_PATH,
        "/etc/finetune/config.json",
    ]:
        assert any(p.startswith(m + "/") for m in mounts), p


def test_rbac_least_privilege() -> None:
    sa, role, binding = build_rbac(make_job(ADAPTER_SPEC), Settings())
    assert sa["automountServiceAccountToken"] is False
    assert sa["metadata"]["name"] == service_account_name("demo")
    for rule in role["rules"]:
        assert rule["resourceNames"] == ["demo"] and rule["apiGroups"] == ["finetune.dev"]
    verbs = {r["resources"][0]: r["verbs"] for r in role["rules"]}
    assert verbs == {"finetunejobs/status": ["get", "patch"], "finetunejobs": ["get"]}
    assert binding["roleRef"]["name"] == role_name("demo")
    assert [s["name"] for s in binding["subjects"]] == [service_account_name("demo"), "cloud-identity"]
    for obj in (sa, role, binding):
        assert obj["metadata"]["ownerReferences"][0]["controller"] is True
    only = build_rbac(make_job(ST_SPEC), Settings())[2]["subjects"]
    assert len(only) == 1


def test_determinism() -> None:
    a = _all_objects(make_job(ADAPTER_SPEC), Settings())
    b = _all_objects(make_job(copy.deepcopy(ADAPTER_SPEC)), Settings())
    assert a == b and json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    c = build_trainer_job(make_job(ADAPTER_SPEC), Settings(), 2)
    assert c["metadata"]["name"] != a["job"]["metadata"]["name"]


def test_hosted_engines_get_no_trainer_job() -> None:
    hosted = make_job(
        {
            "engine": {"openai": {"apiKeySecretRef": {"name": "k", "key": "key"}}},
            "dataset": {"train": {"url": "https://example.com/chat.jsonl"}},
        }
    )
    with pytest.raises(ValueError, match="hosted"):
        build_trainer_job(hosted, Settings(), 1)
    with pytest.raises(ValueError, match="hosted"):
        build_trainer_config(hosted, Settings(), 1)


def test_owner_reference_needs_uid() -> None:
    job = make_job(ST_SPEC)
    job.metadata.uid = None
    with pytest.raises(ValueError, match="uid"):
        owner_reference(job)


DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


@pytest.mark.parametrize("name", ["a", "x" * 63, "y" * 253, "my-job." * 30 + "z", "a" * 62 + "-b"])
def test_name_limits(name: str) -> None:
    names = [
        trainer_job_name(name, 1),
        trainer_job_name(name, 100),
        config_map_name(name),
        service_account_name(name),
        role_name(name),
    ]
    for n in names:
        assert DNS_LABEL.match(n) and len(n) <= 63, n
    assert len(set(names)) == len(names)
    assert trainer_job_name(name, 7) == trainer_job_name(name, 7)


def test_long_names_stay_distinct() -> None:
    a, b = "p" * 70 + "-one", "p" * 70 + "-two"
    assert trainer_job_name(a, 1) != trainer_job_name(b, 1)
    assert trainer_job_name("short", 2) == "short-a2"
    assert dns_label("ok-name") == "ok-name"
    with pytest.raises(ValueError):
        trainer_job_name("x", 0)
    job = build_trainer_job(make_job(ST_SPEC, name="n" * 200), Settings(), 1)
    assert len(job["metadata"]["name"]) <= 63
    assert all(len(v) <= 63 for v in job["metadata"]["labels"].values())
