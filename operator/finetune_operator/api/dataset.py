"""Training data of a FinetuneJob: given (ConfigMap, PVC, URL) or generated from documents by an LLM."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from .common import (
    DNS_SUBDOMAIN,
    MAX_NAME,
    MAX_URI,
    ConfigMapKeyRef,
    KubeModel,
    Refused,
    SecretKeyRef,
    Url,
    no_userinfo,
)

DATA_URL = r"^(https?://[^\s]+|s3://[a-z0-9][-a-z0-9.]{1,61}[a-z0-9]/[^\s]+)$"


class PvcPath(KubeModel):
    """A file or directory on a PersistentVolumeClaim."""

    claim_name: str = Field(
        description="Name of the PersistentVolumeClaim.", max_length=MAX_NAME, pattern=DNS_SUBDOMAIN
    )
    path: str = Field(
        description="Path inside the volume.",
        min_length=1,
        max_length=1024,
        pattern=r"^[^\s]+$",
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": "!self.contains('..')", "message": "path must not contain '..'"}
            ]
        },
    )

    @field_validator("path")
    @classmethod
    def _no_escape(cls, value: str) -> str:
        if ".." in value:
            raise ValueError("path must not contain '..'")
        return value


class DataSource(KubeModel):
    """Where a file comes from. Set exactly one of configMap, pvc or url."""

    model_config = KubeModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {
                    "rule": "[has(self.configMap), has(self.pvc), has(self.url)].filter(x, x).size() == 1",
                    "message": "set exactly one of configMap, pvc or url",
                },
            ]
        }
    }

    config_map: ConfigMapKeyRef | None = Field(default=None, description="A key of a ConfigMap.")
    pvc: PvcPath | None = Field(default=None, description="A path on a PersistentVolumeClaim.")
    url: Url | None = Field(
        default=None, max_length=MAX_URI, pattern=DATA_URL, description="An http(s):// URL or an s3:// URI."
    )

    _urls = field_validator("url")(no_userinfo)

    @model_validator(mode="after")
    def _exactly_one(self) -> DataSource:
        n = sum(x is not None for x in (self.config_map, self.pvc, self.url))
        if n != 1:
            raise ValueError(f"set exactly one of configMap, pvc or url; got {n}")
        return self


class LLMEndpoint(KubeModel):
    """An OpenAI-compatible chat-completions endpoint (hosted API or in-cluster vLLM)."""

    base_url: Url = Field(
        max_length=MAX_URI,
        pattern=r"^https?://[^\s]+$",
        description="Base URL, e.g. http://vllm.llm:8000/v1.",
    )
    model: str = Field(min_length=1, max_length=MAX_URI, description="Model name to request.")
    api_key_secret_ref: SecretKeyRef | None = Field(
        default=None, description="Secret key holding the API key."
    )
    api_key: Annotated[str | None, Refused("apiKeySecretRef")] = None
    token: Annotated[str | None, Refused("apiKeySecretRef")] = None
    temperature: float = Field(default=0.2, ge=0, le=2, description="Sampling temperature.")
    max_concurrency: int = Field(default=4, ge=1, le=256, description="Requests in flight at once.")
    max_retries: int = Field(default=5, ge=0, le=50, description="Retries per request, with backoff.")

    _urls = field_validator("base_url")(no_userinfo)


MAX_DOCUMENTS = 64  # each entry may be a directory; the CEL rules on an entry cost x64, well in budget
MAX_PROMPT = 32768  # room for a long instruction with few-shot examples

DEFAULT_QA_PROMPT = """\
Context information is below.

---------------------
{context_str}
---------------------

Given the context information and not prior knowledge.
generate only questions based on the below query.

You are a Teacher/ Professor. Your task is to setup \
{num_questions_per_chunk} questions for an upcoming \
quiz/examination. The questions should be diverse in nature \
across the document. Restrict the questions to the \
context information provided."
"""


class GenerateSpec(KubeModel):
    """Generate an EmbeddingQAFinetuneDataset from documents with an LLM (generate_qa_embedding_pairs)."""

    model_config = KubeModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {
                    "rule": "self.chunkOverlap < self.chunkSize",
                    "message": "chunkOverlap must be smaller than chunkSize",
                },
            ]
        }
    }

    documents: list[DataSource] = Field(
        min_length=1,
        max_length=MAX_DOCUMENTS,
        description=f"Documents: text, Markdown, HTML or PDF files, or directories of them (read "
        f"recursively). At most {MAX_DOCUMENTS} entries: put more files in a directory on a PVC.",
    )
    llm: LLMEndpoint = Field(description="The LLM that writes the questions.")
    questions_per_chunk: int = Field(default=2, ge=1, le=50, description="Questions asked per chunk.")
    prompt_template: str = Field(
        default=DEFAULT_QA_PROMPT,
        min_length=1,
        max_length=MAX_PROMPT,
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "self.contains('{context_str}') && self.contains('{num_questions_per_chunk}')",
                    "message": "promptTemplate must contain {context_str} and {num_questions_per_chunk}",
                }
            ]
        },
        description="Prompt with {context_str} and {num_questions_per_chunk} placeholders.",
    )
    chunk_size: int = Field(default=1024, ge=64, le=100000, description="Chunk size in characters.")
    chunk_overlap: int = Field(
        default=128, ge=0, le=50000, description="Overlap between chunks in characters."
    )
    validation_fraction: float = Field(
        default=0.2, ge=0, lt=1, description="Fraction of generated queries kept for validation."
    )
    save_every: int = Field(
        default=20, ge=1, le=1_000_000, description="Save partial results every N chunks."
    )
    generate_only: bool = Field(
        default=False, description="Stop after generation so the dataset can be reviewed."
    )

    @field_validator("prompt_template")
    @classmethod
    def _placeholders(cls, value: str) -> str:
        for ph in ("{context_str}", "{num_questions_per_chunk}"):
            if ph not in value:
                raise ValueError(f"promptTemplate must contain {ph}")
        return value

    @model_validator(mode="after")
    def _overlap(self) -> GenerateSpec:
        if self.chunk_overlap >= self.chunk_size:
            raise ValueError("chunkOverlap must be smaller than chunkSize")
        return self


class DatasetSpec(KubeModel):
    """Training data. Either train (and optionally validation) or generate."""

    model_config = KubeModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.train) != has(self.generate)",
                    "message": "set exactly one of train or generate",
                },
                {
                    "rule": "!has(self.generate) || !has(self.validation)",
                    "message": "validation cannot be combined with generate",
                },
            ]
        }
    }

    format: Literal["embeddingQA", "chat", "preference", "inputs"] | None = Field(
        default=None,
        description="embeddingQA: EmbeddingQAFinetuneDataset JSON (embedding engines); chat: OpenAI chat JSONL "
        "(openai, llm method sft); preference: OpenAI preference JSONL (llm method dpo); inputs: inputs JSONL "
        "(gradient). Inferred from the engine if unset.",
    )
    train: DataSource | None = Field(default=None, description="Training data.")
    validation: DataSource | None = Field(default=None, description="Validation data (held out).")
    validation_split: float = Field(
        default=0.1,
        ge=0,
        lt=1,
        description="Fraction of the training queries (llm: examples) held out for evaluation when no "
        "validation is given.",
    )
    generate: GenerateSpec | None = Field(default=None, description="Generate the dataset from documents.")

    @model_validator(mode="after")
    def _source(self) -> DatasetSpec:
        if (self.train is None) == (self.generate is None):
            raise ValueError("set exactly one of train or generate")
        if self.generate is not None and self.validation is not None:
            raise ValueError("validation cannot be combined with generate (use generate.validationFraction)")
        return self
