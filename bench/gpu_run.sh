#!/usr/bin/env bash
# On the GPU machine (no network, no pip index): run bench/gpu_trainer.py against the carried model.
# Prepare here first:  .venv/bin/python bench/gpu_trainer.py prepare   (writes bench/.gpu_model, gitignored)
# Then, with the device tool: run  bash bench/gpu_run.sh  with carry=["bench/.gpu_model"].
set -uo pipefail
OUT=${OUT:-/tmp/gpu-bench-out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
SITE=/tmp/gpu-bench-site
# Install only the carried wheels whose module the image lacks (pip-free otherwise: --no-index).
missing=()
for pair in pydantic:pydantic pydantic_core:pydantic_core annotated_types:annotated_types \
    typing_inspection:typing_inspection datasets:datasets dill:dill multiprocess:multiprocess; do
  mod=${pair%%:*}; whl=${pair##*:}
  if ! $PY -c "import $mod" 2>/dev/null; then missing+=(bench/.gpu_model/whl/${whl}-*.whl); fi
done
if ((${#missing[@]})); then
  echo "installing carried wheels: ${missing[*]}"
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" "${missing[@]}" \
    || echo "wheel install failed"
fi
export PYTHONPATH="operator:trainer_image${PYTHONPATH:+:$PYTHONPATH}:$SITE"
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  $PY - <<'EOF'
import importlib
for m in ("torch", "transformers", "sentence_transformers", "accelerate", "datasets", "pydantic", "pyarrow"):
    try:
        print(m, getattr(importlib.import_module(m), "__version__", "?"))
    except Exception as exc:
        print(m, "MISSING", exc)
EOF
} 2>&1 | tee "$OUT/env.txt"
$PY bench/gpu_trainer.py run --model bench/.gpu_model/model --out "$OUT" "$@" 2> >(tee "$OUT/stderr.txt" >&2)
