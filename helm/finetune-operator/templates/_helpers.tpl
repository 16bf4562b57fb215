{{/* Names and labels. */}}
{{- define "finetune-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "finetune-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "finetune-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "finetune-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "finetune-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "finetune-operator.labels" -}}
helm.sh/chart: {{ include "finetune-operator.chart" . }}
{{ include "finetune-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: finetune-operator
{{- end }}

{{- define "finetune-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "finetune-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "finetune-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* true when the operator watches the whole cluster (operator.namespaces empty). */}}
{{- define "finetune-operator.clusterwide" -}}
{{- if empty .Values.operator.namespaces }}true{{ end }}
{{- end }}

{{/*
RBAC rules. They must equal finetune_operator.rbac_requirements.RULES (tests/unit/test_chart_rbac.py).
"namespaced" rules are on namespaced resources: a ClusterRole in cluster-wide mode, a Role per watched
namespace otherwise. "cluster" rules are on cluster-scoped resources: always a ClusterRole.
No wildcards: every verb and resource is explicit.
*/}}
{{- define "finetune-operator.rules.framework.namespaced" -}}
# kopf watches FinetuneJobs and patches its finalizer and progress annotations
- apiGroups: ["finetune.dev"]
  resources: ["finetunejobs"]
  verbs: ["list", "watch", "patch"]
# kopf and the operator post Events on the objects they handle
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- if and .Values.operator.peering (not (include "finetune-operator.clusterwide" .)) }}
# kopf peering between replicas (namespaced operator)
- apiGroups: ["kopf.dev"]
  resources: ["kopfpeerings"]
  verbs: ["get", "list", "watch", "patch"]
{{- end }}
{{- end }}

{{- define "finetune-operator.rules.framework.cluster" -}}
# kopf watches TrainingQuotas and patches its annotations
- apiGroups: ["finetune.dev"]
  resources: ["trainingquotas"]
  verbs: ["list", "watch", "patch"]
# kopf observes namespaces; quotas select namespaces by label
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["get", "list", "watch"]
# kopf observes the CRDs it serves (resource discovery at run time)
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["list", "watch"]
{{- if and .Values.operator.peering (include "finetune-operator.clusterwide" .) }}
# kopf peering between replicas (cluster-wide operator)
- apiGroups: ["kopf.dev"]
  resources: ["clusterkopfpeerings"]
  verbs: ["get", "list", "watch", "patch"]
{{- end }}
{{- end }}

{{- define "finetune-operator.rules.application.namespaced" -}}
# read FinetuneJobs (quota usage); annotate admission decisions; delete after ttlSecondsAfterFinished
- apiGroups: ["finetune.dev"]
  resources: ["finetunejobs"]
  verbs: ["get", "list", "patch", "delete"]
# write FinetuneJob status; held so that the per-job trainer Role may grant it (escalation prevention)
- apiGroups: ["finetune.dev"]
  resources: ["finetunejobs/status"]
  verbs: ["get", "patch"]
# one trainer Job per attempt; patched to suspend, deleted on cleanup
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["create", "get", "list", "watch", "patch", "delete"]
# observe trainer pods (phase, termination message, disruptions); delete stuck pods
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch", "delete"]
# the trainer's rendered config
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["create", "get", "list", "watch", "patch", "delete"]
# the headless Service of a multi-pod attempt (rank 0's DNS name); deleted with its FinetuneJob
- apiGroups: [""]
  resources: ["services"]
  verbs: ["create", "get"]
# the per-job trainer ServiceAccount
- apiGroups: [""]
  resources: ["serviceaccounts"]
  verbs: ["create", "get", "list", "watch", "delete"]
# the per-job Role and RoleBinding that let a trainer patch its own FinetuneJob status
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["roles", "rolebindings"]
  verbs: ["create", "get", "list", "watch", "delete"]
# hosted engines (openai, gradient) read their API key from the referenced Secret
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
{{- if .Values.operator.kueueMode }}
# Kueue mode: read Kueue's admission of the trainer Job
- apiGroups: ["kueue.x-k8s.io"]
  resources: ["workloads"]
  verbs: ["get", "list", "watch"]
{{- end }}
{{- end }}

{{- define "finetune-operator.rules.application.cluster" -}}
# read TrainingQuotas (admission)
- apiGroups: ["finetune.dev"]
  resources: ["trainingquotas"]
  verbs: ["get", "list"]
# write TrainingQuota usage
- apiGroups: ["finetune.dev"]
  resources: ["trainingquotas/status"]
  verbs: ["get", "patch"]
# quota queues are ordered by the value of the job's priority class
- apiGroups: ["scheduling.k8s.io"]
  resources: ["priorityclasses"]
  verbs: ["get", "list", "watch"]
{{- end }}

{{/* The FINETUNE_* environment: one variable per key of .Values.operator (null values are skipped). */}}
{{- define "finetune-operator.env" -}}
{{- range $key, $value := .Values.operator }}
{{- if not (kindIs "invalid" $value) }}
- name: {{ printf "FINETUNE_%s" ($key | snakecase | upper) }}
  value: {{ if kindIs "string" $value }}{{ $value | quote }}{{ else }}{{ $value | toJson | quote }}{{ end }}
{{- end }}
{{- end }}
{{- end }}
