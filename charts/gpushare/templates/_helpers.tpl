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
in one namespace apart. Immutable on Deployments (README, "Upgrading").
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

{{/*
The managed/unmanaged split of manifests/webhook.yaml: whether an object not owned by a controller,
or its pod template (a CronJob's under spec.jobTemplate), carries any gpushare.io/ annotation. Every field is guarded with has(): a missing field would be an
evaluation error, which rejects the request under failurePolicy: Fail.
*/}}
{{- define "gpushare.hasAnnotations" -}}
(!(has(object.metadata) && has(object.metadata.ownerReferences) &&
object.metadata.ownerReferences.exists(r, has(r.controller) && r.controller)) &&
((has(object.metadata) && has(object.metadata.annotations) &&
object.metadata.annotations.exists(k, k.startsWith('gpushare.io/'))) ||
(has(object.spec) && has(object.spec.template) && has(object.spec.template.metadata) &&
has(object.spec.template.metadata.annotations) &&
object.spec.template.metadata.annotations.exists(k, k.startsWith('gpushare.io/'))) ||
(has(object.spec) && has(object.spec.jobTemplate) && has(object.spec.jobTemplate.spec) &&
has(object.spec.jobTemplate.spec.template) &&
has(object.spec.jobTemplate.spec.template.metadata) &&
has(object.spec.jobTemplate.spec.template.metadata.annotations) &&
object.spec.jobTemplate.spec.template.metadata.annotations.exists(k, k.startsWith('gpushare.io/')))))
{{- end -}}
