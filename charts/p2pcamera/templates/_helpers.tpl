{{/* Chart name, truncated to the 63 characters of a label value. */}}
{{- define "p2pcamera.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Object name prefix: `<release>-<chart>`, or `<release>` when it already contains the chart name. */}}
{{- define "p2pcamera.fullname" -}}
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

{{/* Labels on every object. */}}
{{- define "p2pcamera.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "p2pcamera.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels of one component (`operator` or `router`): pass (list $ "component"). */}}
{{- define "p2pcamera.selectorLabels" -}}
{{- $root := index . 0 }}
app.kubernetes.io/name: {{ include "p2pcamera.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{/* The operator/router image. */}}
{{- define "p2pcamera.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "p2pcamera.operator.serviceAccountName" -}}
{{- if .Values.operator.serviceAccount.create }}
{{- default (printf "%s-operator" (include "p2pcamera.fullname" .)) .Values.operator.serviceAccount.name }}
{{- else }}
{{- required "operator.serviceAccount.name is required when operator.serviceAccount.create is false" .Values.operator.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "p2pcamera.router.serviceAccountName" -}}
{{- if .Values.router.serviceAccount.create }}
{{- default (printf "%s-router" (include "p2pcamera.fullname" .)) .Values.router.serviceAccount.name }}
{{- else }}
{{- required "router.serviceAccount.name is required when router.serviceAccount.create is false" .Values.router.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* "true" when the operator orders the router's certificate by ACME. */}}
{{- define "p2pcamera.acme.active" -}}
{{- if and .Values.acme.enabled .Values.router.hosts (not .Values.router.tls.existingSecret) }}true{{ end }}
{{- end }}

{{/* The TLS Secret the router serves. */}}
{{- define "p2pcamera.router.tlsSecret" -}}
{{- default .Values.router.tls.secretName .Values.router.tls.existingSecret }}
{{- end }}

{{/* Secret holding the EAB HMAC key, when EAB is configured. */}}
{{- define "p2pcamera.acme.eabSecret" -}}
{{- default (printf "%s-acme-eab" (include "p2pcamera.fullname" .)) .Values.acme.eab.existingSecret }}
{{- end }}

{{/* Settings that cannot be expressed in values.schema.json. */}}
{{- define "p2pcamera.validate" -}}
{{- if include "p2pcamera.acme.active" . }}
{{- if not .Values.acme.agreeTerms }}
{{- fail "ACME is on (router.hosts is set): set acme.agreeTerms=true to accept the ACME server's terms of service, or set router.tls.existingSecret, or acme.enabled=false" }}
{{- end }}
{{- if and .Values.acme.eab.keyId (not (or .Values.acme.eab.hmacKey .Values.acme.eab.existingSecret)) }}
{{- fail "acme.eab.keyId needs acme.eab.hmacKey or acme.eab.existingSecret" }}
{{- end }}
{{- if and (not .Values.acme.eab.keyId) (or .Values.acme.eab.hmacKey .Values.acme.eab.existingSecret) }}
{{- fail "acme.eab.hmacKey or acme.eab.existingSecret needs acme.eab.keyId" }}
{{- end }}
{{- end }}
{{- $range := splitList "-" .Values.cameraPod.portRange }}
{{- if gt (atoi (index $range 0)) (atoi (index $range 1)) }}
{{- fail (printf "cameraPod.portRange %s: the first port is larger than the last" .Values.cameraPod.portRange) }}
{{- end }}
{{- $offset := int .Values.cameraPod.metricsPortOffset }}
{{- if and $offset (le $offset (sub (atoi (index $range 1)) (atoi (index $range 0)))) }}
{{- fail (printf "cameraPod.metricsPortOffset %d must be larger than the width of cameraPod.portRange %s (metrics ports would land on session ports), or 0" $offset .Values.cameraPod.portRange) }}
{{- end }}
{{- if .Values.turn.enabled }}
{{- if .Values.turn.external.urls }}
{{- fail "turn.enabled deploys coturn and points the router at it, turn.external.urls points the router at a TURN service you run: set one of them, not both" }}
{{- end }}
{{- $relay := splitList "-" .Values.turn.relayPortRange }}
{{- if gt (atoi (index $relay 0)) (atoi (index $relay 1)) }}
{{- fail (printf "turn.relayPortRange %s: the first port is larger than the last" .Values.turn.relayPortRange) }}
{{- end }}
{{- end }}
{{- if and .Values.watchAllNamespaces (or .Values.operator.watchNamespace .Values.router.sessionNamespace) }}
{{- fail "watchAllNamespaces serves every namespace: leave operator.watchNamespace and router.sessionNamespace empty" }}
{{- end }}
{{- end }}

{{/* The namespace whose sessions the operator serves; empty with watchAllNamespaces. */}}
{{- define "p2pcamera.operator.sessionNamespace" -}}
{{- if not .Values.watchAllNamespaces }}
{{- default .Release.Namespace .Values.operator.watchNamespace }}
{{- end }}
{{- end }}

{{/* The namespace whose sessions the router serves; empty with watchAllNamespaces. */}}
{{- define "p2pcamera.router.sessionNamespace" -}}
{{- if not .Values.watchAllNamespaces }}
{{- default (include "p2pcamera.operator.sessionNamespace" .) .Values.router.sessionNamespace }}
{{- end }}
{{- end }}

{{/* Preferred spreading of a component's replicas over nodes: pass (list $ "component"). */}}
{{- define "p2pcamera.spread" -}}
podAntiAffinity:
  preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- include "p2pcamera.selectorLabels" . | nindent 12 }}
{{- end }}

{{/* The TURN host name browsers reach the chart's coturn at (`turn.host`, required with `turn.enabled`). */}}
{{- define "p2pcamera.turn.host" -}}
{{- required "turn.host: the DNS name browsers reach coturn at is required with turn.enabled (e.g. turn.example.com)" .Values.turn.host }}
{{- end }}

{{/*
TURN URLs the router hands out, comma separated: the chart's coturn with `turn.enabled`, else
`turn.external.urls`; empty: no TURN.
*/}}
{{- define "p2pcamera.turn.urls" -}}
{{- if .Values.turn.enabled }}
{{- $host := include "p2pcamera.turn.host" . }}
{{- printf "turn:%s:3478?transport=udp,turn:%s:3478?transport=tcp,turns:%s:443?transport=tcp" $host $host $host }}
{{- else }}
{{- join "," .Values.turn.external.urls }}
{{- end }}
{{- end }}

{{/*
TURN URLs camera pods of relaying classes relay through, comma separated: `cameraPod.turnUrls`,
else the chart's coturn over UDP with `turn.enabled`, else `turn.external.urls`.
*/}}
{{- define "p2pcamera.turn.podUrls" -}}
{{- if .Values.cameraPod.turnUrls }}
{{- join "," .Values.cameraPod.turnUrls }}
{{- else if .Values.turn.enabled }}
{{- printf "turn:%s:3478?transport=udp" (include "p2pcamera.turn.host" .) }}
{{- else }}
{{- join "," .Values.turn.external.urls }}
{{- end }}
{{- end }}

{{/* The Secret holding the TURN shared secret (coturn's `static-auth-secret`). */}}
{{- define "p2pcamera.turn.secretName" -}}
{{- if .Values.turn.enabled }}
{{- default (printf "%s-turn" (include "p2pcamera.fullname" .)) .Values.turn.existingSecret }}
{{- else }}
{{- required "turn.external.existingSecret: the Secret with the TURN shared secret is required with turn.external.urls" .Values.turn.external.existingSecret }}
{{- end }}
{{- end }}

{{/* The key of the shared secret in that Secret. */}}
{{- define "p2pcamera.turn.secretKey" -}}
{{- if .Values.turn.enabled }}static-auth-secret{{ else }}{{ .Values.turn.external.secretKey }}{{ end }}
{{- end }}

{{/*
The `kubernetes.io/tls` Secret coturn serves `turns:` with: `turn.tls.existingSecret`, else the
router's. The router's covers `turn.host` only if it is among `router.hosts` (checked when ACME
orders it; a `router.tls.existingSecret` is the administrator's to check).
*/}}
{{- define "p2pcamera.turn.tlsSecret" -}}
{{- if .Values.turn.tls.existingSecret }}
{{- .Values.turn.tls.existingSecret }}
{{- else if .Values.router.tls.existingSecret }}
{{- .Values.router.tls.existingSecret }}
{{- else if include "p2pcamera.acme.active" . }}
{{- if not (has (include "p2pcamera.turn.host" .) .Values.router.hosts) }}
{{- fail (printf "turn.host %s is not among router.hosts, so the router's ACME certificate does not cover it: add it to router.hosts, or set turn.tls.existingSecret" .Values.turn.host) }}
{{- end }}
{{- include "p2pcamera.router.tlsSecret" . }}
{{- else }}
{{- fail "turn.enabled needs a certificate for turn.host (turns: on 443): set turn.tls.existingSecret, or router.tls.existingSecret, or add turn.host to router.hosts and let ACME order it" }}
{{- end }}
{{- end }}
