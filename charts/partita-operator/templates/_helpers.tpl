{{/* The chart name, or nameOverride. */}}
{{- define "partita-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The prefix of every object's name: the release name, with the chart name unless the
release name already holds it. */}}
{{- define "partita-operator.fullname" -}}
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

{{- define "partita-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "partita-operator.labels" -}}
helm.sh/chart: {{ include "partita-operator.chart" . }}
{{ include "partita-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: partita
{{- end }}

{{/* Labels that select the operator pods; never change them, a Deployment's selector is
immutable. */}}
{{- define "partita-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "partita-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "partita-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "partita-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The leader Lease: leaderElection.leaseName, or one per release, so that two releases in
one namespace (each watching its own namespace) never share a leader. */}}
{{- define "partita-operator.leaseName" -}}
{{- default (printf "%s-leader" (include "partita-operator.fullname" . | trunc 56 | trimSuffix "-")) .Values.leaderElection.leaseName }}
{{- end }}

{{/* An image reference: repository@digest when a digest is given, else repository:tag. */}}
{{- define "partita-operator.imageRef" -}}
{{- if .image.digest }}
{{- printf "%s@%s" .image.repository .image.digest }}
{{- else }}
{{- printf "%s:%s" .image.repository (default .appVersion .image.tag) }}
{{- end }}
{{- end }}

{{- define "partita-operator.image" -}}
{{- include "partita-operator.imageRef" (dict "image" .Values.image "appVersion" .Chart.AppVersion) }}
{{- end }}

{{- define "partita-operator.nodeImage" -}}
{{- include "partita-operator.imageRef" (dict "image" .Values.nodeImage "appVersion" .Chart.AppVersion) }}
{{- end }}
