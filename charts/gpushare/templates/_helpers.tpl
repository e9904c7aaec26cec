{{/* The chart name (app.kubernetes.io/name). */}}
{{- define "gpushare.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The name of every object: "gpushare" for a release named gpushare. */}}
{{- define "gpushare.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Labels of every object (a superset of what manifests/kustomization.yaml adds). */}}
{{- define "gpushare.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "gpushare.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/part-of: gpushare
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/*
Selects the webhook pods (Deployment, Service, PodDisruptionBudget): the instance keeps two releases
in one namespace apart. Immutable on Deployments (docs/operator-guide.md, "Upgrading").
*/}}
{{- define "gpushare.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gpushare.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: webhook
{{- end -}}

{{- define "gpushare.tlsSecret" -}}
{{- default (printf "%s-tls" (include "gpushare.fullname" .)) .Values.tls.secretName -}}
{{- end -}}

{{- define "gpushare.policyConfigMap" -}}
{{- printf "%s-policy" (include "gpushare.fullname" .) -}}
{{- end -}}

{{/* The serving Certificate's name, for cert-manager.io/inject-ca-from. */}}
{{- define "gpushare.certificate" -}}
{{- printf "%s-tls" (include "gpushare.fullname" .) -}}
{{- end -}}

{{- /*
The CEL of the webhooks' matchConditions (see manifests/webhook.yaml, which has the same text):
usesGpu: a gpushare.io/ annotation on the object or its pod template, or a container that writes the
GPU variables itself; builtinController: made by a built-in controller; ephemeralUsesGpu: an ephemeral
container that writes them. Every field is guarded with has(): a missing field would be an evaluation
error, which rejects the request under failurePolicy: Fail.
*/}}
{{- define "gpushare.usesGpu" -}}
((has(object.metadata) && has(object.metadata.annotations) && object.metadata.annotations.exists(k, k.startsWith('gpushare.io/'))) || (has(object.spec) && has(object.spec.template) && has(object.spec.template.metadata) && has(object.spec.template.metadata.annotations) && object.spec.template.metadata.annotations.exists(k, k.startsWith('gpushare.io/'))) || (has(object.spec) && has(object.spec.jobTemplate) && has(object.spec.jobTemplate.spec) && has(object.spec.jobTemplate.spec.template) && has(object.spec.jobTemplate.spec.template.metadata) && has(object.spec.jobTemplate.spec.template.metadata.annotations) && object.spec.jobTemplate.spec.template.metadata.annotations.exists(k, k.startsWith('gpushare.io/'))) || (has(object.spec) && ((has(object.spec.containers) && object.spec.containers.exists(c, has(c.env) && c.env.exists(e, (e.name == 'NVIDIA_VISIBLE_DEVICES' && (has(e.valueFrom) || (has(e.value) && !(e.value in ['', 'none', 'void'])))) || e.name == 'CUDA_MPS_ACTIVE_THREAD_PERCENTAGE' || e.name == 'CUDA_MPS_PINNED_DEVICE_MEM_LIMIT'))) || (has(object.spec.initContainers) && object.spec.initContainers.exists(c, has(c.env) && c.env.exists(e, (e.name == 'NVIDIA_VISIBLE_DEVICES' && (has(e.valueFrom) || (has(e.value) && !(e.value in ['', 'none', 'void'])))) || e.name == 'CUDA_MPS_ACTIVE_THREAD_PERCENTAGE' || e.name == 'CUDA_MPS_PINNED_DEVICE_MEM_LIMIT'))))) || (has(object.spec) && has(object.spec.template) && has(object.spec.template.spec) && ((has(object.spec.template.spec.containers) && object.spec.template.spec.containers.exists(c, has(c.env) && c.env.exists(e, (e.name == 'NVIDIA_VISIBLE_DEVICES' && (has(e.valueFrom) || (has(e.value) && !(e.value in ['', 'none', 'void'])))) || e.name == 'CUDA_MPS_ACTIVE_THREAD_PERCENTAGE' || e.name == 'CUDA_MPS_PINNED_DEVICE_MEM_LIMIT'))) || (has(object.spec.template.spec.initContainers) && object.spec.template.spec.initContainers.exists(c, has(c.env) && c.env.exists(e, (e.name == 'NVIDIA_VISIBLE_DEVICES' && (has(e.valueFrom) || (has(e.value) && !(e.value in ['', 'none', 'void'])))) || e.name == 'CUDA_MPS_ACTIVE_THREAD_PERCENTAGE' || e.name == 'CUDA_MPS_PINNED_DEVICE_MEM_LIMIT'))))) || (has(object.spec) && has(object.spec.jobTemplate) && has(object.spec.jobTemplate.spec) && has(object.spec.jobTemplate.spec.template) && has(object.spec.jobTemplate.spec.template.spec) && ((has(object.spec.jobTemplate.spec.template.spec.containers) && object.spec.jobTemplate.spec.template.spec.containers.exists(c, has(c.env) && c.env.exists(e, (e.name == 'NVIDIA_VISIBLE_DEVICES' && (has(e.valueFrom) || (has(e.value) && !(e.value in ['', 'none', 'void'])))) || e.name == 'CUDA_MPS_ACTIVE_THREAD_PERCENTAGE' || e.name == 'CUDA_MPS_PINNED_DEVICE_MEM_LIMIT'))) || (has(object.spec.jobTemplate.spec.template.spec.initContainers) && object.spec.jobTemplate.spec.template.spec.initContainers.exists(c, has(c.env) && c.env.exists(e, (e.name == 'NVIDIA_VISIBLE_DEVICES' && (has(e.valueFrom) || (has(e.value) && !(e.value in ['', 'none', 'void'])))) || e.name == 'CUDA_MPS_ACTIVE_THREAD_PERCENTAGE' || e.name == 'CUDA_MPS_PINNED_DEVICE_MEM_LIMIT'))))))
{{- end -}}
{{- define "gpushare.builtinController" -}}
(has(object.metadata) && has(object.metadata.ownerReferences) && object.metadata.ownerReferences.exists(r, has(r.controller) && r.controller && ((r.apiVersion == 'apps/v1' && r.kind in ['Deployment', 'ReplicaSet', 'StatefulSet', 'DaemonSet']) || (r.apiVersion == 'batch/v1' && r.kind in ['Job', 'CronJob']))))
{{- end -}}
{{- define "gpushare.ephemeralUsesGpu" -}}
has(object.spec) && has(object.spec.ephemeralContainers) && object.spec.ephemeralContainers.exists(c, has(c.env) && c.env.exists(e, (e.name == 'NVIDIA_VISIBLE_DEVICES' && (has(e.valueFrom) || (has(e.value) && !(e.value in ['', 'none', 'void'])))) || e.name == 'CUDA_MPS_ACTIVE_THREAD_PERCENTAGE' || e.name == 'CUDA_MPS_PINNED_DEVICE_MEM_LIMIT'))
{{- end -}}
