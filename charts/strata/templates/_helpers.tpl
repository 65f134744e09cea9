{{- define "strata.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "strata.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "strata.labels" -}}
app.kubernetes.io/name: {{ include "strata.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "strata.selector" -}}
app.kubernetes.io/name: {{ include "strata.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: controller
{{- end -}}

{{- define "strata.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The controller's and the workers' ServiceAccount names. */}}
{{- define "strata.controllerAccount" -}}
{{- printf "%s-controller" (include "strata.fullname" .) -}}
{{- end -}}
{{- define "strata.workerAccount" -}}
{{- printf "%s-worker" (include "strata.fullname" .) -}}
{{- end -}}

{{/* Namespaces that get the worker ServiceAccount and Role. */}}
{{- define "strata.workerNamespaces" -}}
{{- $ns := .Values.watchNamespaces -}}
{{- if not $ns -}}{{- $ns = .Values.workerNamespaces -}}{{- end -}}
{{- if not $ns -}}{{- $ns = list .Release.Namespace -}}{{- end -}}
{{- toJson $ns -}}
{{- end -}}
