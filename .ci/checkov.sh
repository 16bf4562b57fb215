#!/usr/bin/env bash
# Security scan of the rendered Helm chart with checkov's kubernetes framework, in its own venv
# (.venv-checkov; checkov pins many packages that must not leak into the project venv).
#
# Renders helm/finetune-operator with its default values (helm-python-sdk, from the project venv) plus
# the values files given as arguments, runs checkov on the manifests, and fails if any failed check id
# is not explained in the "Explained checkov findings" table of docs/security.md.
#
#   .ci/checkov.sh                              # default values
#   .ci/checkov.sh helm/finetune-operator/ci/peering-values.yaml
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv-checkov/bin/checkov ]; then
  "$PY" -m venv .venv-checkov
  .venv-checkov/bin/pip install --quiet --disable-pip-version-check checkov
fi
if [ ! -x .venv/bin/python ]; then
  make setup >/dev/null
fi
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
.venv/bin/python - "$OUT" "$@" <<'PY'
import sys
from pathlib import Path

import helm_python as helm
import yaml

out = Path(sys.argv[1])
values: dict = {}
for path in sys.argv[2:]:
    values.update(yaml.safe_load(Path(path).read_text()) or {})
with helm.Chart.load("helm/finetune-operator") as chart:
    rendered = chart.render(values=values, name="finetune-operator", namespace="finetune-system")
for name, text in rendered.items():
    if name.endswith(".yaml") and text.strip():
        (out / name.replace("/", "_")).write_text(text)
print(f"rendered {len(list(out.iterdir()))} manifests to {out}", file=sys.stderr)
PY
set +e
.venv-checkov/bin/checkov --framework kubernetes -d "$OUT" --compact --quiet -o json >"$OUT/report.json" 2>"$OUT/checkov.log"
rc=$?
set -e
if [ "$rc" -gt 1 ]; then
  echo "checkov crashed (exit $rc):" >&2
  cat "$OUT/checkov.log" >&2
  exit "$rc"
fi
.venv/bin/python - "$OUT/report.json" docs/security.md <<'PY'
import json
import re
import sys
from pathlib import Path

raw = Path(sys.argv[1]).read_text().strip()
data = json.loads(raw) if raw else []
reports = data if isinstance(data, list) else [data]
failed: dict[str, set[str]] = {}
for report in reports:
    if not isinstance(report, dict):
        continue
    results = report.get("results", {})
    for check in results.get("failed_checks", []):
        failed.setdefault(check["check_id"], set()).add(f'{check["resource"]}: {check["check_name"]}')
doc = Path(sys.argv[2]).read_text()
section = doc.split("## Explained checkov findings", 1)[-1]
explained = set(re.findall(r"^\|\s*`?(CKV2?_K8S_\d+)`?\s*\|", section, flags=re.M))
unexplained = sorted(set(failed) - explained)
print(f"checkov: {sum(len(v) for v in failed.values())} failed checks "
      f"({len(failed)} check ids, all explained: {not unexplained})")
for check_id in sorted(failed):
    mark = "UNEXPLAINED" if check_id in unexplained else "explained"
    for what in sorted(failed[check_id]):
        print(f"  {check_id} [{mark}] {what}")
if unexplained:
    print("explain these in docs/security.md (## Explained checkov findings) or fix the chart: "
          + ", ".join(unexplained), file=sys.stderr)
    sys.exit(1)
PY
