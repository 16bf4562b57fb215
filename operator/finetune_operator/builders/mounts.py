"""Where things live inside a trainer pod: one plan shared by the trainer config and the pod template.

Conventions (the trainer relies on them):

* a ConfigMap key used as data is mounted at ``DATA_MOUNT/<configmap>/<key>``;
* every PersistentVolumeClaim referenced as data or as a model (``pvc://CLAIM/PATH``) is mounted read-only at
  ``PVC_MOUNT/<claim>``, so ``pvc://CLAIM/PATH`` is the local path ``PVC_MOUNT/CLAIM/PATH``;
* the output claim is mounted read-write at ``OUTPUT_MOUNT`` (and its volume is the only writable claim);
* the job's own files go to ``<output storageUri>/<namespace>/<name>``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..api.finetunejob import DataSource, FinetuneJob, FinetuneJobSpec
from ..api.trainerconfig import DATA_MOUNT, OUTPUT_MOUNT, PVC_MOUNT
from ..naming import dns_label

OUTPUT_VOLUME = "output"


def parse_pvc_uri(uri: str) -> tuple[str, str]:
    """``pvc://CLAIM/PATH`` -> (claim, path without leading/trailing slashes)."""
    if not uri.startswith("pvc://"):
        raise ValueError(f"not a pvc:// URI: {uri!r}")
    claim, _, path = uri.removeprefix("pvc://").partition("/")
    if not claim:
        raise ValueError(f"pvc:// URI without a claim name: {uri!r}")
    return claim, path.strip("/")


def _join(*parts: str) -> str:
    return "/".join(p.strip("/") for p in parts if p.strip("/"))


def job_namespace(job: FinetuneJob) -> str:
    return job.metadata.namespace or "default"


def resolve_output(job: FinetuneJob) -> tuple[str, str]:
    """(output_dir as the pod sees it, output_uri as users see it) for this job's files."""
    if job.spec.output is None:
        raise ValueError("spec.output is required for in-cluster engines")
    uri = job.spec.output.storage_uri
    ns, name = job_namespace(job), job.metadata.name
    if uri.startswith("pvc://"):
        claim, path = parse_pvc_uri(uri)
        rel = _join(path, ns, name)
        return "/" + _join(OUTPUT_MOUNT, rel), f"pvc://{claim}/{rel}"
    full = uri.rstrip("/") + f"/{ns}/{name}"
    return full, full


def local_model_path(uri: str) -> str:
    """A model reference as the pod sees it: pvc://CLAIM/PATH becomes PVC_MOUNT/CLAIM/PATH, others unchanged."""
    if uri.startswith("pvc://"):
        claim, path = parse_pvc_uri(uri)
        return "/" + _join(PVC_MOUNT, claim, path)
    return uri


def config_map_volume_name(cm_name: str) -> str:
    return dns_label("data-" + cm_name)


def claim_volume_name(claim: str) -> str:
    return dns_label("pvc-" + claim)


@dataclass(frozen=True)
class MountPlan:
    """Data ConfigMaps (name -> keys), claims mounted read-only under PVC_MOUNT, and the output claim."""

    config_maps: dict[str, tuple[str, ...]] = field(default_factory=dict)
    claims: tuple[str, ...] = ()
    output_claim: str | None = None

    def claim_volume(self, claim: str) -> str:
        return OUTPUT_VOLUME if claim == self.output_claim else claim_volume_name(claim)


def _sources(spec: FinetuneJobSpec) -> list[DataSource]:
    out: list[DataSource] = []
    if spec.dataset is not None:
        out += [s for s in (spec.dataset.train, spec.dataset.validation) if s is not None]
        if spec.dataset.generate is not None:
            out += spec.dataset.generate.documents
    return out


def _model_uris(spec: FinetuneJobSpec) -> list[str]:
    uris: list[str] = []
    if spec.engine.sentence_transformers is not None:
        uris.append(spec.engine.sentence_transformers.model)
    if spec.engine.adapter is not None:
        uris.append(spec.engine.adapter.base_model)
        if spec.engine.adapter.continue_from:
            uris.append(spec.engine.adapter.continue_from)
    if spec.engine.llm is not None:
        uris.append(spec.engine.llm.base_model)
    return uris


def plan_mounts(spec: FinetuneJobSpec) -> MountPlan:
    """Everything the pod must mount for this spec (sorted, so the result is deterministic)."""
    cms: dict[str, set[str]] = {}
    claims: set[str] = set()
    for src in _sources(spec):
        if src.config_map is not None:
            cms.setdefault(src.config_map.name, set()).add(src.config_map.key)
        elif src.pvc is not None:
            claims.add(src.pvc.claim_name)
    for uri in _model_uris(spec):
        if uri.startswith("pvc://"):
            claims.add(parse_pvc_uri(uri)[0])
    output_claim = None
    if spec.output is not None and spec.output.storage_uri.startswith("pvc://"):
        output_claim = parse_pvc_uri(spec.output.storage_uri)[0]
    return MountPlan(
        config_maps={k: tuple(sorted(v)) for k, v in sorted(cms.items())},
        claims=tuple(sorted(claims)),
        output_claim=output_claim,
    )


def resolve_source(src: DataSource) -> str:
    """A data source as the pod reads it (a local path, or the URL itself)."""
    if src.config_map is not None:
        return "/" + _join(DATA_MOUNT, src.config_map.name, src.config_map.key)
    if src.pvc is not None:
        return "/" + _join(PVC_MOUNT, src.pvc.claim_name, src.pvc.path)
    if src.url is not None:
        return src.url
    raise ValueError("data source has none of configMap, pvc or url")
