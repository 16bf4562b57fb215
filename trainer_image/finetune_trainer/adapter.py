"""Adapters on frozen embeddings, in the reference's (LlamaIndex) layouts, and their ST modules.

- `LinearAdapter`: identity-initialised `linear` (optional bias); LlamaIndex `LinearLayer` keys.
- `TwoLayerAdapter`: `linear1` -> activation -> `linear2`, optional residual (`residual_weight * out + x`,
  weight starting at 0 so training starts from the identity); LlamaIndex `TwoLayerNN` keys.
- `save_reference_layout` writes `<dir>/config.json` + `pytorch_model.bin`.
- `TwoLayerAdapterModule`: a sentence-transformers module wrapping `TwoLayerAdapter` (linear adapters
  use the stock `Dense` module), placed on the query route of a `Router`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from sentence_transformers.base.modules import Module
from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "silu": nn.SiLU}


class LinearAdapter(nn.Module):
    """y = W x (+ b), W initialised to the identity."""

    def __init__(self, in_features: int, out_features: int | None = None, bias: bool = False) -> None:
        super().__init__()
        out_features = out_features or in_features
        self.in_features, self.out_features, self.bias = in_features, out_features, bias
        self.linear = nn.Linear(in_features, out_features, bias=bias)
        with torch.no_grad():
            self.linear.weight.copy_(torch.eye(out_features, in_features))
            if bias:
                self.linear.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.linear(x)
        return out

    def get_config_dict(self) -> dict[str, Any]:
        return {"in_features": self.in_features, "out_features": self.out_features, "bias": self.bias}


class TwoLayerAdapter(nn.Module):
    """y = linear2(act(linear1(x))), with residual: residual_weight * y + x."""

    def __init__(
        self,
        in_features: int,
        hidden_features: int | None = None,
        out_features: int | None = None,
        bias: bool = False,
        activation_fn_str: str = "relu",
        add_residual: bool = True,
    ) -> None:
        super().__init__()
        out_features = out_features or in_features
        hidden_features = hidden_features or 2 * in_features
        if add_residual and out_features != in_features:
            raise ValueError("a residual two-layer adapter needs out_features == in_features")
        if activation_fn_str not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation_fn_str!r}")
        self.in_features, self.hidden_features, self.out_features = in_features, hidden_features, out_features
        self.bias, self.activation_fn_str, self.add_residual = bias, activation_fn_str, add_residual
        self.linear1 = nn.Linear(in_features, hidden_features, bias=bias)
        self.linear2 = nn.Linear(hidden_features, out_features, bias=bias)
        self.act = ACTIVATIONS[activation_fn_str]()
        if add_residual:
            self.residual_weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.linear2(self.act(self.linear1(x)))
        if self.add_residual:
            out = self.residual_weight * out + x
        return out

    def get_config_dict(self) -> dict[str, Any]:
        return {
            "in_features": self.in_features,
            "hidden_features": self.hidden_features,
            "out_features": self.out_features,
            "bias": self.bias,
            "activation_fn_str": self.activation_fn_str,
            "add_residual": self.add_residual,
        }


Adapter = LinearAdapter | TwoLayerAdapter


def build_adapter(
    kind: str, dim: int, hidden: int | None, bias: bool, activation: str, residual: bool
) -> Adapter:
    if kind == "linear":
        return LinearAdapter(dim, dim, bias=bias)
    if kind == "twoLayer":
        return TwoLayerAdapter(
            dim, hidden, dim, bias=bias, activation_fn_str=activation, add_residual=residual
        )
    raise ValueError(f"adapter kind must be linear or twoLayer, got {kind!r}")


def save_reference_layout(adapter: Adapter, path: Path) -> None:
    """LlamaIndex's adapter layout: config.json + pytorch_model.bin."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(adapter.get_config_dict(), indent=2), encoding="utf-8")
    state = {k: v for k, v in adapter.state_dict().items()}
    torch.save(state, path / "pytorch_model.bin")


def load_reference_layout(path: Path) -> Adapter:
    """Load an adapter from the reference layout (either kind, told apart by its config)."""
    config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    adapter: Adapter = TwoLayerAdapter(**config) if "hidden_features" in config else LinearAdapter(**config)
    state = torch.load(path / "pytorch_model.bin", map_location="cpu", weights_only=True)
    adapter.load_state_dict(state)
    return adapter


class TwoLayerAdapterModule(Module):
    """sentence-transformers module applying a TwoLayerAdapter to `sentence_embedding`."""

    config_keys = [
        "in_features",
        "hidden_features",
        "out_features",
        "bias",
        "activation_fn_str",
        "add_residual",
    ]

    def __init__(
        self,
        in_features: int,
        hidden_features: int | None = None,
        out_features: int | None = None,
        bias: bool = False,
        activation_fn_str: str = "relu",
        add_residual: bool = True,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.adapter = TwoLayerAdapter(
            in_features, hidden_features, out_features, bias, activation_fn_str, add_residual
        )
        for key, value in self.adapter.get_config_dict().items():
            setattr(self, key, value)

    def forward(self, features: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        features["sentence_embedding"] = self.adapter(features["sentence_embedding"])
        return features

    def get_embedding_dimension(self) -> int:
        return int(self.out_features)

    def save(self, output_path: str, *args: Any, safe_serialization: bool = True, **kwargs: Any) -> None:
        self.save_config(output_path)
        self.save_torch_weights(output_path, safe_serialization=safe_serialization)

    @classmethod
    def load(  # type: ignore[override]
        cls, model_name_or_path: str, subfolder: str = "", **kwargs: Any
    ) -> TwoLayerAdapterModule:
        hub = {k: kwargs[k] for k in ("token", "cache_folder", "revision", "local_files_only") if k in kwargs}
        config = cls.load_config(model_name_or_path, subfolder=subfolder, **hub)
        module = cls(**config)
        cls.load_torch_weights(model_name_or_path, subfolder=subfolder, model=module, **hub)
        return module


def query_modules(adapter: Adapter) -> list[Module]:
    """ST modules applying `adapter` to query embeddings, stock ones wherever the math allows:
    linear -> Dense; two-layer -> Dense(act) + Dense; residual relu two-layer -> exact stock form via
    x = relu(x) - relu(-x); other residual activations -> TwoLayerAdapterModule (needs trust_remote_code)."""
    from sentence_transformers.sentence_transformer.modules import Dense

    def dense(w: torch.Tensor, b: torch.Tensor | None, act: nn.Module, src: str, dst: str) -> Module:
        return Dense(
            w.shape[1],
            w.shape[0],
            bias=b is not None,
            activation_function=act,
            init_weight=w,
            init_bias=b,
            module_input_name=src,
            module_output_name=dst,
        )

    emb, hid = "sentence_embedding", "adapter_hidden"
    with torch.no_grad():
        if isinstance(adapter, LinearAdapter):
            b = adapter.linear.bias.clone() if adapter.bias else None
            return [dense(adapter.linear.weight.clone(), b, nn.Identity(), emb, emb)]
        w1, w2 = adapter.linear1.weight.clone(), adapter.linear2.weight.clone()
        b1 = adapter.linear1.bias.clone() if adapter.bias else None
        b2 = adapter.linear2.bias.clone() if adapter.bias else None
        if not adapter.add_residual:
            return [
                dense(w1, b1, ACTIVATIONS[adapter.activation_fn_str](), emb, hid),
                dense(w2, b2, nn.Identity(), hid, emb),
            ]
        if adapter.activation_fn_str == "relu":
            r = adapter.residual_weight.detach()
            eye = torch.eye(adapter.in_features)
            w1x = torch.cat([w1, eye, -eye])
            b1x = torch.cat([b1, torch.zeros(2 * adapter.in_features)]) if b1 is not None else None
            w2x = torch.cat([r * w2, eye, -eye], dim=1)
            b2x = r * b2 if b2 is not None else None
            return [dense(w1x, b1x, nn.ReLU(), emb, hid), dense(w2x, b2x, nn.Identity(), hid, emb)]
    module = TwoLayerAdapterModule(**adapter.get_config_dict())
    module.adapter.load_state_dict(adapter.state_dict())
    return [module]


def save_adapter_model(base: Any, adapter: Adapter, path: Path) -> None:
    """Save base + adapter so that stock `SentenceTransformer(path)` applies the adapter to queries only,
    plus the reference layout under `<path>/adapter/`."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Router

    base_modules = list(base.children())
    router = Router.for_query_document(
        query_modules=[*base_modules, *(m.to(base.device) for m in query_modules(adapter))],
        document_modules=base_modules,
    )
    router.default_route = "document"
    model = SentenceTransformer(
        modules=[router], device=str(base.device), similarity_fn_name=base.similarity_fn_name
    )
    model.save(str(path))
    save_reference_layout(adapter, path / "adapter")
