{{/* Names, labels, images and the pieces every pod shares. */}}

{{- define "videoqa.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "videoqa.fullname" -}}
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

{{/* Object name of one component: FULLNAME-COMPONENT (kept under 52 characters so Job pod names fit). */}}
{{- define "videoqa.component" -}}
{{- printf "%s-%s" (include "videoqa.fullname" .root) .name | trunc 52 | trimSuffix "-" -}}
{{- end -}}

{{- define "videoqa.selectorLabels" -}}
app.kubernetes.io/name: {{ include "videoqa.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "videoqa.labels" -}}
{{ include "videoqa.selectorLabels" . }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: videoqa
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* image: (dict "root" $ "name" "gateway") -> registry + image name + ":" + tag */}}
{{- define "videoqa.image" -}}
{{- $img := index .root.Values.image .name -}}
{{- printf "%s%s:%s" .root.Values.image.registry $img (default .root.Chart.AppVersion .root.Values.image.tag) -}}
{{- end -}}

{{- define "videoqa.podSecurityContext" -}}
{{- toYaml .Values.podSecurityContext }}
{{- end -}}

{{- define "videoqa.containerSecurityContext" -}}
{{- toYaml .Values.containerSecurityContext }}
{{- end -}}

{{- define "videoqa.pullSecrets" -}}
imagePullSecrets: {{ toJson .Values.image.pullSecrets }}
{{- end -}}

{{/* The engine's internal URL, which gateways use (--engine-url). */}}
{{- define "videoqa.engineUrl" -}}
{{- printf "http://%s:%d" (include "videoqa.component" (dict "root" . "name" "engine")) (int .Values.engine.port) -}}
{{- end -}}

{{- define "videoqa.engineTokenSecret" -}}
{{- default (printf "%s-engine-token" (include "videoqa.fullname" .)) .Values.engine.apiTokenSecret -}}
{{- end -}}

{{- define "videoqa.apiKeysSecret" -}}
{{- default (printf "%s-api-keys" (include "videoqa.fullname" .)) .Values.gateway.apiKeysSecret -}}
{{- end -}}

{{- define "videoqa.redisPasswordSecret" -}}
{{- if .Values.redis.passwordSecret -}}
{{- .Values.redis.passwordSecret -}}
{{- else if eq .Values.redis.mode "internal" -}}
{{- printf "%s-redis" (include "videoqa.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* Redis URL for VIDEOQA_REDIS_URL; $(REDIS_PASSWORD) is expanded by the kubelet from the env var set before it. */}}
{{- define "videoqa.redisUrl" -}}
{{- $pw := ternary "" ":$(REDIS_PASSWORD)@" (empty (include "videoqa.redisPasswordSecret" .)) -}}
{{- if eq .Values.redis.mode "internal" -}}
{{- printf "redis://%s%s:6379/0" $pw (include "videoqa.component" (dict "root" . "name" "redis")) -}}
{{- else -}}
{{- regexReplaceAll "^(rediss?://)" .Values.redis.externalUrl (printf "${1}%s" $pw) -}}
{{- end -}}
{{- end -}}

{{/* A random secret value that survives upgrades: the value already in the cluster, else a new one. */}}
{{- define "videoqa.keepOrRandom" -}}
{{- $existing := lookup "v1" "Secret" .root.Release.Namespace .secret -}}
{{- if and $existing (index $existing.data .key) -}}
{{- index $existing.data .key -}}
{{- else -}}
{{- randAlphaNum 40 | b64enc -}}
{{- end -}}
{{- end -}}

{{/* A PVC made by the chart: (dict "root" $ "name" N "size" S "storageClass" C "accessModes" M "component" X) */}}
{{- define "videoqa.pvc" -}}
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: {{ .name }}
  labels:
    {{- include "videoqa.labels" (dict "root" .root "component" .component) | nindent 4 }}
  annotations:
    # Data outlives the release: `helm uninstall` keeps this claim.
    helm.sh/resource-policy: keep
spec:
  accessModes:
    {{- toYaml .accessModes | nindent 4 }}
  {{- with .storageClass }}
  storageClassName: {{ . }}
  {{- end }}
  resources:
    requests:
      storage: {{ .size }}
{{- end -}}

{{/* The fewest gateway pods there will be (what decides whether a PDB makes sense). */}}
{{- define "videoqa.gatewayMinReplicas" -}}
{{- $g := .Values.gateway -}}
{{- if $g.keda.enabled -}}{{ $g.keda.minReplicas }}{{- else if $g.autoscaling.enabled -}}{{ $g.autoscaling.minReplicas }}{{- else -}}{{ $g.replicas }}{{- end -}}
{{- end -}}
