{{/*
Names.
*/}}
{{- define "ponder.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The resource name prefix; role suffixes (-orchestrator, 13 characters at most) must
still fit in 63 characters, so it is cut at 48.
*/}}
{{- define "ponder.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 48 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 48 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 48 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "ponder.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels. Call with (dict "ctx" $ "component" "generator").
*/}}
{{- define "ponder.labels" -}}
helm.sh/chart: {{ include "ponder.chart" .ctx }}
{{ include "ponder.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: ponder
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "ponder.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ponder.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "ponder.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ponder.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "ponder.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
The cluster name every node registers under (PONDER_CLUSTER).
*/}}
{{- define "ponder.clusterName" -}}
{{- default (include "ponder.fullname" .) .Values.cluster.name }}
{{- end }}

{{/*
etcd: names and the client URLs every node gets (PONDER_ETCD, comma-separated).
*/}}
{{- define "ponder.etcd.fullname" -}}
{{- printf "%s-etcd" (include "ponder.fullname" .) }}
{{- end }}

{{- define "ponder.etcd.headless" -}}
{{- printf "%s-etcd-peers" (include "ponder.fullname" .) }}
{{- end }}

{{- define "ponder.etcd.endpoints" -}}
{{- if and .Values.etcd.enabled .Values.etcd.externalEndpoints }}
{{- fail "etcd: set either etcd.enabled (the bundled etcd) or etcd.externalEndpoints, not both" }}
{{- end }}
{{- if .Values.etcd.enabled }}
{{- printf "http://%s.%s.svc.%s:%d" (include "ponder.etcd.fullname" .) .Release.Namespace .Values.clusterDomain (int .Values.etcd.clientPort) }}
{{- else if .Values.etcd.externalEndpoints }}
{{- join "," .Values.etcd.externalEndpoints }}
{{- else }}
{{- fail "etcd: the services discover each other through etcd; set etcd.enabled=true (bundled) or etcd.externalEndpoints" }}
{{- end }}
{{- end }}

{{/*
Role facts. Roles are generator, verifier, orchestrator.
*/}}
{{- define "ponder.roles" -}}
generator
verifier
orchestrator
{{- end }}

{{- define "ponder.grpcServiceName" -}}
{{- get (dict "generator" "ponder.v1.Generator" "verifier" "ponder.v1.Verifier" "orchestrator" "ponder.v1.Orchestrator") . }}
{{- end }}

{{- define "ponder.binary" -}}
{{- printf "ponder-%s" . }}
{{- end }}

{{- define "ponder.listenHost" -}}
{{- if eq .Values.cluster.ipFamily "IPv6" }}[::]{{ else }}0.0.0.0{{ end }}
{{- end }}

{{- define "ponder.modelRole" -}}
{{- if or (eq . "generator") (eq . "verifier") }}true{{ end }}
{{- end }}

{{/*
The environment of a role (the ConfigMap data). Call with (dict "ctx" $ "role" "generator").
*/}}
{{- define "ponder.roleEnv" -}}
{{- $ctx := .ctx }}
{{- $role := .role }}
{{- $v := index $ctx.Values $role -}}
PONDER_LISTEN: {{ printf "%s:%d" (include "ponder.listenHost" $ctx) (int $v.port) | quote }}
PONDER_ETCD: {{ include "ponder.etcd.endpoints" $ctx | quote }}
PONDER_CLUSTER: {{ include "ponder.clusterName" $ctx | quote }}
PONDER_LEASE_TTL: {{ int64 $ctx.Values.cluster.leaseTtl | quote }}
PONDER_DRAIN_SECS: {{ int64 $v.drainSecs | quote }}
PONDER_LOG_FORMAT: {{ $ctx.Values.logging.format | quote }}
RUST_LOG: {{ $ctx.Values.logging.level | quote }}
{{- if $ctx.Values.metrics.enabled }}
PONDER_METRICS_ADDR: {{ printf "%s:%d" (include "ponder.listenHost" $ctx) (int $ctx.Values.metrics.port) | quote }}
{{- end }}
{{- if include "ponder.modelRole" $role }}
PONDER_MODEL: {{ $v.model | quote }}
PONDER_MAX_QUEUED: {{ int64 $v.maxQueued | quote }}
PONDER_MAX_BATCH: {{ int64 $v.maxBatch | quote }}
PONDER_MAX_BATCH_TOKENS: {{ int64 $v.maxBatchTokens | quote }}
{{- else }}
PONDER_DEFAULT_GENERATIONS: {{ int64 $v.defaultGenerations | quote }}
PONDER_MAX_QUERIES: {{ int64 $v.maxQueries | quote }}
{{- if $v.format }}
PONDER_FORMAT: "/etc/ponder/orchestrator/format.json"
{{- else if $v.formatFile }}
PONDER_FORMAT: {{ $v.formatFile | quote }}
{{- end }}
{{- if $v.policy }}
PONDER_POLICY: "/etc/ponder/orchestrator/policy.json"
{{- else if $v.policyFile }}
PONDER_POLICY: {{ $v.policyFile | quote }}
{{- end }}
{{- end }}
{{- if $ctx.Values.tls.enabled }}
PONDER_TLS_CERT: {{ printf "%s/%s" $ctx.Values.tls.mountPath $ctx.Values.tls.certKey | quote }}
PONDER_TLS_KEY: {{ printf "%s/%s" $ctx.Values.tls.mountPath $ctx.Values.tls.keyKey | quote }}
PONDER_TLS_CA: {{ printf "%s/%s" $ctx.Values.tls.mountPath $ctx.Values.tls.caKey | quote }}
{{- end }}
{{- end }}

{{/*
A native gRPC probe. Call with (dict "probe" $v.probes.readiness "port" 7001 "service" "ponder.v1.Generator").
*/}}
{{- define "ponder.grpcProbe" -}}
grpc:
  port: {{ int .port }}
  service: {{ .service | quote }}
periodSeconds: {{ .probe.periodSeconds }}
timeoutSeconds: {{ .probe.timeoutSeconds }}
failureThreshold: {{ .probe.failureThreshold }}
{{- end }}

{{/*
Checks that run once per render.
*/}}
{{- define "ponder.validate" -}}
{{- if and .Values.tls.enabled (not .Values.tls.secretName) }}
{{- fail "tls.enabled needs tls.secretName (a Secret holding the certificate, key and CA)" }}
{{- end }}
{{- if and (eq .Values.models.source "init") (not .Values.models.init.command) }}
{{- fail "models.source=init needs models.init.command (the command that fetches the models into models.mountPath)" }}
{{- end }}
{{- if and .Values.serviceMonitor.enabled (not .Values.metrics.enabled) }}
{{- fail "serviceMonitor.enabled needs metrics.enabled" }}
{{- end }}
{{- if and .Values.etcd.enabled (not (has (int .Values.etcd.replicas) (list 1 3))) }}
{{- fail "etcd.replicas must be 1 or 3" }}
{{- end }}
{{- if and .Values.etcd.enabled (gt (int .Values.etcd.replicas) 1) (not .Values.etcd.persistence.enabled) }}
{{- fail "etcd.replicas=3 needs etcd.persistence.enabled (a member that restarts empty cannot rejoin)" }}
{{- end }}
{{- if and .Values.tests.enabled (not .Values.orchestrator.enabled) }}
{{- fail "tests.enabled needs orchestrator.enabled (the test calls the orchestrator); set tests.enabled=false" }}
{{- end }}
{{- range $role := splitList "\n" (include "ponder.roles" .) }}
{{- $v := index $.Values $role }}
{{- if and $v.enabled $v.autoscaling.enabled }}
{{- if and (not (kindIs "invalid" $v.autoscaling.targetCPUUtilizationPercentage)) (not (dig "requests" "cpu" "" $v.resources)) }}
{{- fail (printf "%s.autoscaling.targetCPUUtilizationPercentage needs %s.resources.requests.cpu (utilization is relative to the request)" $role $role) }}
{{- end }}
{{- if and (not (kindIs "invalid" $v.autoscaling.targetMemoryUtilizationPercentage)) (not (dig "requests" "memory" "" $v.resources)) }}
{{- fail (printf "%s.autoscaling.targetMemoryUtilizationPercentage needs %s.resources.requests.memory" $role $role) }}
{{- end }}
{{- if and (kindIs "invalid" $v.autoscaling.targetCPUUtilizationPercentage) (kindIs "invalid" $v.autoscaling.targetMemoryUtilizationPercentage) (not $v.autoscaling.metrics) }}
{{- fail (printf "%s.autoscaling: give a CPU or memory target or metrics" $role) }}
{{- end }}
{{- if gt (int $v.autoscaling.minReplicas) (int $v.autoscaling.maxReplicas) }}
{{- fail (printf "%s.autoscaling.minReplicas is above maxReplicas" $role) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
