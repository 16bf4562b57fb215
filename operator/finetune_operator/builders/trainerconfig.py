"""The trainer's config.json, resolved for the pod, and the ConfigMap that carries it."""

from __future__ import annotations

import json
from typing import Any

from ..api.finetunejob import FinetuneJob, FinetuneJobSpec
from ..api.trainerconfig import CONFIG_FILE, JobRef, ReportSpec, S3Access, TrainerConfig
from ..config import Settings
from ..naming import config_map_name
from .common import DEFAULT_API_SERVER, SA_CA_PATH, SA_TOKEN_PATH, child_metadata
from .mounts import job_namespace, local_model_path, resolve_output, resolve_source


def require_in_cluster(job: FinetuneJob) -> None:
    """Hosted engines run no pods: refuse to build pod-side objects for them."""
    if not job.spec.engine.in_cluster:
        raise ValueError(f"engine {job.spec.engine.kind.value} is hosted and runs no trainer Job")


def _pod_spec(spec: FinetuneJobSpec) -> FinetuneJobSpec:
    """The spec with pvc:// model references turned into the paths the pod sees."""
    engine = spec.engine
    if engine.sentence_transformers is not None:
        st = engine.sentence_transformers.model_copy(
            update={"model": local_model_path(engine.sentence_transformers.model)}
        )
        engine = engine.model_copy(update={"sentence_transformers": st})
    if engine.adapter is not None:
        ad = engine.adapter.model_copy(update={"base_model": local_model_path(engine.adapter.base_model)})
        engine = engine.model_copy(update={"adapter": ad})
    if engine.llm is not None:
        llm = engine.llm.model_copy(update={"base_model": local_model_path(engine.llm.base_model)})
        engine = engine.model_copy(update={"llm": llm})
    return spec.model_copy(update={"engine": engine})


def build_trainer_config(job: FinetuneJob, settings: Settings, attempt: int) -> TrainerConfig:
    """Render what `python -m finetune_trainer` needs for attempt `attempt`, with every location resolved.

    adapter.continueFrom stays a pvc:// or s3:// URI (its pattern requires it); the claim is mounted at
    PVC_MOUNT/<claim>, so the trainer maps pvc://CLAIM/PATH to PVC_MOUNT/CLAIM/PATH.
    """
    require_in_cluster(job)
    if attempt < 1:
        raise ValueError(f"attempt must be >= 1, got {attempt}")
    spec = job.spec
    if spec.dataset is None or spec.output is None:
        raise ValueError("spec.dataset and spec.output are required for in-cluster engines")
    output_dir, output_uri = resolve_output(job)
    ds = spec.dataset
    s3 = None
    if spec.s3 is not None:
        s3 = S3Access(endpoint_url=spec.s3.endpoint_url, region=spec.s3.region)
    insecure = settings.trainer_api_server is not None and settings.api_insecure
    return TrainerConfig(
        job=JobRef(namespace=job_namespace(job), name=job.metadata.name, uid=job.metadata.uid or ""),
        attempt=attempt,
        spec=_pod_spec(spec),
        train=resolve_source(ds.train) if ds.train is not None else None,
        validation=resolve_source(ds.validation) if ds.validation is not None else None,
        documents=[resolve_source(d) for d in ds.generate.documents] if ds.generate is not None else [],
        output_dir=output_dir,
        output_uri=output_uri,
        checkpoint_steps=spec.output.checkpoint_steps or settings.default_checkpoint_steps,
        keep_checkpoints=spec.output.keep_checkpoints,
        report=ReportSpec(
            api_server=settings.trainer_api_server or DEFAULT_API_SERVER,
            token_path=SA_TOKEN_PATH,
            ca_path=SA_CA_PATH,
            insecure=insecure,
            interval_seconds=settings.progress_interval_seconds,
        ),
        s3=s3,
    )


def render_config(config: TrainerConfig) -> str:
    """config.json: stable key order, so equal configs give byte-equal ConfigMaps."""
    return json.dumps(config.to_json(), sort_keys=True, indent=2) + "\n"


def build_config_map(job: FinetuneJob, settings: Settings, config: TrainerConfig) -> dict[str, Any]:
    """The ConfigMap holding config.json, owned by the FinetuneJob.

    It is per job, not per attempt: attempts differ only in `attempt`, which the trainer also reads from the
    FINETUNE_ATTEMPT env var of its pod (that one wins), so a replaced ConfigMap never confuses an old pod.
    """
    require_in_cluster(job)
    del settings  # the config already holds everything settings decide
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": child_metadata(job, config_map_name(job.metadata.name)),
        "data": {CONFIG_FILE: render_config(config)},
    }
