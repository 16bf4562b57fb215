"""Building blocks shared by the FinetuneJob and TrainingQuota APIs.

Pure pydantic: no kopf, no Kubernetes client. JSON names are camelCase (aliases),
Python names are snake_case.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    StringConstraints,
    field_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema

GROUP = "finetune.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

# Kubernetes names (RFC 1123 subdomain / label).
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
QUANTITY = r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$"
DURATION = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h|d))+$"

# Bounds of every string, list and map (the CRD's maxLength / maxItems / maxProperties). Without them the
# API server's CEL cost estimator assumes sizes up to the 3 MiB request limit and refuses the CRD.
MAX_NAME = 253  # an object name (DNS subdomain), a Secret or ConfigMap key
MAX_LABEL_VALUE = 63  # a label value, a DNS label
MAX_QUALIFIED_NAME = 317  # a label / taint key or extended resource name: prefix (253) + "/" + name (63)
MAX_URI = 2048  # a URL, a storage URI, a model reference
MAX_STATUS_URI = 4096  # a URI the operator derives below a spec URI
MAX_ID = 256  # an id a provider assigns (jobs, models, adapters)
MAX_QUANTITY = 64  # a resource quantity, a duration
MAX_MESSAGE = 32768  # a human-readable message (metav1.Condition's bound)
MAX_SECRET = 4096  # a refused inline credential (bounded like everything else)

Name = Annotated[str, StringConstraints(max_length=MAX_NAME)]
QualifiedName = Annotated[str, StringConstraints(min_length=1, max_length=MAX_QUALIFIED_NAME)]
LabelValue = Annotated[str, StringConstraints(max_length=MAX_LABEL_VALUE)]


def _truncate(value: Any) -> Any:
    if isinstance(value, str) and len(value) > MAX_MESSAGE:
        return value[: MAX_MESSAGE - 1] + "…"
    return value


_USERINFO = "^[a-zA-Z][a-zA-Z0-9+.-]*://[^/?#]*@"
_USERINFO_MESSAGE = (
    "credentials in a URL are refused (user:password@ would be stored and shown by kubectl get): "
    "use a secretKeyRef instead"
)


def no_userinfo(value: str | None) -> str | None:
    """A field validator of every Url field: refuse user:password@ with the CEL rule's message."""
    if value is not None and re.match(_USERINFO, value):
        raise PydanticCustomError("inline_credential", _USERINFO_MESSAGE)
    return value


# A URL that may not carry user:password@: a CEL rule refuses it on the server; each model using the type
# refuses it too with `_urls = field_validator(...)(no_userinfo)` (an AfterValidator here would hide the
# field's pattern from the generated schema).
Url = Annotated[
    str,
    Field(
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": f"!self.matches('{_USERINFO}')", "message": _USERINFO_MESSAGE}
            ]
        }
    ),
]

# A status message: cut to the bound rather than refused, so a long error never makes a status write invalid.
Message = Annotated[str, BeforeValidator(_truncate), StringConstraints(max_length=MAX_MESSAGE)]

_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """Parse a Go-style duration with a `d` extension ("90m", "1h30m", "30d") into seconds."""
    if not re.fullmatch(DURATION, text):
        raise ValueError(f"invalid duration {text!r}: use forms like 90s, 15m, 24h, 30d")
    return sum(float(n) * _DURATION_UNITS[u] for n, u in _DURATION_PART.findall(text))


class KubeModel(BaseModel):
    """Base of every API object: camelCase JSON, unknown fields refused, validated on assignment."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        validate_assignment=True,
        use_attribute_docstrings=False,
    )

    def to_json(self) -> dict[str, Any]:
        """The object as Kubernetes JSON (camelCase, no nulls)."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


@dataclass(frozen=True)
class Refused:
    """Marks a field where users are tempted to put a credential inline (`apiKey`, `token`, ...).

    The field is declared, so the API server does not prune it silently in `fieldValidation=Warn` (the
    default of controllers and GitOps tools): a CEL rule on it refuses any value with a message naming
    the reference to use, and the model refuses it with the same message and path. The value itself is
    never echoed. Use as ``api_key: Annotated[str | None, Refused("apiKeySecretRef")] = None``.
    """

    use: str
    shape: str = "{name, key}"
    kind: str = "a secretKeyRef"

    @property
    def message(self) -> str:
        return (
            f"inline credentials are refused: put the value in a Secret and use {self.kind} "
            f"({self.use}: {self.shape}) instead"
        )

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        message = self.message

        def refuse(value: Any) -> None:
            if value is not None:
                raise PydanticCustomError("inline_credential", message)

        return core_schema.no_info_plain_validator_function(refuse)

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {
            "type": "string",
            "maxLength": MAX_SECRET,
            "description": f"Refused: credentials are never given inline. Use {self.use} (a Secret reference).",
            "x-kubernetes-validations": [{"rule": "false", "message": self.message}],
        }


class OpenObject(BaseModel):
    """A free-form Kubernetes object kept as-is (affinity, label selectors' expressions)."""

    model_config = ConfigDict(extra="allow")


class SecretKeyRef(KubeModel):
    """A key of a Secret in the job's namespace. Credentials are only ever given by reference."""

    name: str = Field(
        description="Name of the Secret, in the same namespace as the object.",
        max_length=MAX_NAME,
        pattern=DNS_SUBDOMAIN,
    )
    key: str = Field(
        description="Key within the Secret.", min_length=1, max_length=MAX_NAME, pattern=r"^[-._a-zA-Z0-9]+$"
    )


class ConfigMapKeyRef(KubeModel):
    """A key of a ConfigMap in the job's namespace."""

    name: str = Field(description="Name of the ConfigMap.", max_length=MAX_NAME, pattern=DNS_SUBDOMAIN)
    key: str = Field(
        description="Key within the ConfigMap.",
        min_length=1,
        max_length=MAX_NAME,
        pattern=r"^[-._a-zA-Z0-9]+$",
    )


class LocalObjectReference(KubeModel):
    """A reference to an object by name in the same namespace."""

    name: str = Field(
        description="Name of the referenced object.", max_length=MAX_NAME, pattern=DNS_SUBDOMAIN
    )


class LabelSelectorRequirement(KubeModel):
    """One set-based label requirement."""

    key: str = Field(
        description="The label key the selector applies to.", min_length=1, max_length=MAX_QUALIFIED_NAME
    )
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"] = Field(
        description="How the key relates to the values: In, NotIn, Exists or DoesNotExist."
    )
    values: list[LabelValue] | None = Field(
        default=None,
        max_length=64,
        description="Values for In and NotIn; must be empty for Exists and DoesNotExist.",
    )


class LabelSelector(KubeModel):
    """A Kubernetes label selector. An empty selector matches everything."""

    match_labels: dict[QualifiedName, LabelValue] | None = Field(
        default=None, max_length=64, description="Labels that must all be present with these values."
    )
    match_expressions: list[LabelSelectorRequirement] | None = Field(
        default=None, max_length=32, description="Set-based requirements, all of which must hold."
    )

    def matches(self, labels: dict[str, str]) -> bool:
        """Whether a set of labels satisfies this selector (pure, same rules as the API server)."""
        for key, value in (self.match_labels or {}).items():
            if labels.get(key) != value:
                return False
        for req in self.match_expressions or []:
            present = req.key in labels
            vals = req.values or []
            if req.operator == "In" and (not present or labels[req.key] not in vals):
                return False
            if req.operator == "NotIn" and present and labels[req.key] in vals:
                return False
            if req.operator == "Exists" and not present:
                return False
            if req.operator == "DoesNotExist" and present:
                return False
        return True


class Condition(KubeModel):
    """A condition following the Kubernetes API conventions (metav1.Condition)."""

    type: str = Field(
        max_length=316, description="Type of the condition, in CamelCase (Admitted, Running, Succeeded, ...)."
    )
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(
        max_length=1024, description="A CamelCase, machine-readable reason for the last transition."
    )
    message: Message = Field(default="", description="A human-readable message about the transition.")
    last_transition_time: datetime = Field(description="When the condition last changed status (RFC 3339).")
    observed_generation: int | None = Field(
        default=None, description="The .metadata.generation the condition was computed from."
    )


PositiveInt = Annotated[int, Field(ge=1)]
NonNegativeInt = Annotated[int, Field(ge=0)]


class ObjectMetaLite(BaseModel):
    """The part of ObjectMeta the operator reads; everything else is kept."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, alias_generator=to_camel)

    name: str = ""
    namespace: str | None = None
    uid: str | None = None
    generation: int | None = None
    resource_version: str | None = None
    creation_timestamp: datetime | None = None
    deletion_timestamp: datetime | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)

    @field_validator("labels", "annotations", mode="before")
    @classmethod
    def _none_to_empty(cls, value: Any) -> Any:
        return {} if value is None else value
