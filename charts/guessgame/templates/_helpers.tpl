{{/* Chart name. */}}
{{- define "guessgame.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: the release name, with the chart name unless it already contains it. */}}
{{- define "guessgame.fullname" -}}
{{- if contains .Chart.Name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "guessgame.operatorName" -}}
{{- printf "%s-operator" (include "guessgame.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "guessgame.selectorLabels" -}}
app.kubernetes.io/name: {{ include "guessgame.name" . }}-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "guessgame.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "guessgame.selectorLabels" . }}
app.kubernetes.io/component: operator
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "guessgame.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "guessgame.operatorName" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "guessgame.operatorImage" -}}
{{- printf "%s:%s" .Values.operator.image.repository (default .Chart.AppVersion .Values.operator.image.tag) }}
{{- end }}

{{/* Backups: the namespace of the GuessGame backed up (and of the CronJob and its claim). */}}
{{- define "guessgame.backupNamespace" -}}
{{- default .Release.Namespace .Values.backup.namespace }}
{{- end }}

{{- define "guessgame.backupName" -}}
{{- printf "%s-backup" .Values.backup.guessgame | trunc 52 | trimSuffix "-" }}
{{- end }}

{{- define "guessgame.backupClaim" -}}
{{- default (include "guessgame.backupName" .) .Values.backup.persistence.existingClaim }}
{{- end }}

{{- define "guessgame.backupLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "guessgame.name" . }}-backup
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: backup
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
guessgame.dev/backup-of: {{ .Values.backup.guessgame }}
{{- end }}
