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
The port of tracing.otlpEndpoint (PONDER_OTLP_ENDPOINT): the URL's, else 4317 (the
OTLP/gRPC port, for http:// and https:// alike). The NetworkPolicies allow it.
*/}}
{{- define "ponder.otlpPort" -}}
{{- regexFind ":[0-9]+$" (urlParse .Values.tracing.otlpEndpoint).host | trimPrefix ":" | default "4317" | int }}
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
{{- with $ctx.Values.tracing.otlpEndpoint }}
PONDER_OTLP_ENDPOINT: {{ . | quote }}
{{- end }}
{{- if $ctx.Values.metrics.enabled }}
PONDER_METRICS_ADDR: {{ printf "%s:%d" (include "ponder.listenHost" $ctx) (int $ctx.Values.metrics.port) | quote }}
{{- end }}
{{- if include "ponder.modelRole" $role }}
PONDER_MODEL: {{ $v.model | quote }}
{{- /* A generator group's model is in its pods' env (PONDER_MODEL_NAME); this
ConfigMap is shared by every group. */}}
{{- if and $v.modelName (ne $role "generator") }}
PONDER_MODEL_NAME: {{ $v.modelName | quote }}
{{- end }}
PONDER_MAX_QUEUED: {{ int64 $v.maxQueued | quote }}
PONDER_MAX_BATCH: {{ int64 $v.maxBatch | quote }}
PONDER_MAX_BATCH_TOKENS: {{ int64 $v.maxBatchTokens | quote }}
PONDER_PREFIX_CACHE_MIB: {{ int64 $v.prefixCacheMiB | quote }}
PONDER_KV_CACHE_DTYPE: {{ $v.kvCacheDtype | default "auto" | quote }}
PONDER_QUANTIZE: {{ $v.quantize | default "auto" | quote }}
{{- else }}
PONDER_DEFAULT_GENERATIONS: {{ int64 $v.defaultGenerations | quote }}
PONDER_MAX_QUERIES: {{ int64 $v.maxQueries | quote }}
PONDER_MAX_QUERIES_PER_CLIENT: {{ int64 $v.maxQueriesPerClient | quote }}
PONDER_BUDGET_MODE: {{ $v.budget.mode | quote }}
PONDER_SLO: {{ $v.budget.slo | toString | quote }}
PONDER_CAPACITY: {{ $v.budget.capacity | toString | quote }}
{{- with $v.budget.priorityKeys }}
PONDER_PRIORITY_KEYS: {{ join "," . | quote }}
{{- end }}
{{- with include "ponder.defaultModel" $ctx }}
PONDER_DEFAULT_MODEL: {{ . | quote }}
{{- end }}
{{- /* PONDER_EXPECT_MODEL: every generator group's and the verifier's model, when all
are named (ponder.expectModel); orchestrator.extraEnv overrides it. */}}
{{- with include "ponder.expectModel" $ctx }}
PONDER_EXPECT_MODEL: {{ . | quote }}
{{- end }}
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
PONDER_HEALTH_LISTEN: {{ printf "%s:%d" (include "ponder.listenHost" $ctx) (int $ctx.Values.health.port) | quote }}
{{- with $ctx.Values.tls }}
{{- if .enabled }}
PONDER_TLS_CERT: {{ printf "%s/%s" .mountPath .certKey | quote }}
PONDER_TLS_KEY: {{ printf "%s/%s" .mountPath .keyKey | quote }}
PONDER_TLS_CA: {{ printf "%s/%s" .mountPath .caKey | quote }}
{{- if eq $role "orchestrator" }}
PONDER_TLS_SERVER_NAME: {{ include "ponder.tls.serverName" $ctx | quote }}
PONDER_TLS_CLIENT_AUTH: {{ .clientAuth | quote }}
{{- else }}
PONDER_TLS_CLIENT_AUTH: "required"
{{- end }}
{{- end }}
{{- end }}
{{- with $ctx.Values.etcd.externalTls }}
{{- if and (not $ctx.Values.etcd.enabled) .secretName }}
PONDER_ETCD_CA: {{ printf "%s/%s" .mountPath .caKey | quote }}
{{- if .certKey }}
PONDER_ETCD_CERT: {{ printf "%s/%s" .mountPath .certKey | quote }}
PONDER_ETCD_KEY: {{ printf "%s/%s" .mountPath .keyKey | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- if eq $role "orchestrator" }}
{{- with $v.apiKeys }}
{{- if .secretName }}
PONDER_API_KEYS_FILE: {{ printf "%s/%s" .mountPath .key | quote }}
{{- end }}
{{- end }}
{{- if gt (float64 $v.rateLimit.perSecond) 0.0 }}
{{- $rate := float64 $v.rateLimit.perSecond }}
PONDER_RATE_LIMIT: {{ if eq $rate (float64 (int64 $rate)) }}{{ int64 $rate | quote }}{{ else }}{{ toString $rate | quote }}{{ end }}
{{- if not (kindIs "invalid" $v.rateLimit.burst) }}
PONDER_RATE_BURST: {{ int64 $v.rateLimit.burst | quote }}
{{- end }}
{{- end }}
{{- with $v.gateway }}
{{- if .enabled }}
PONDER_GATEWAY_ADDR: {{ printf "%s:%d" (include "ponder.listenHost" $ctx) (int .port) | quote }}
PONDER_GATEWAY_MAX_BODY_BYTES: {{ int64 .maxBodyBytes | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
A Secret volume that projects only the given keys (each to a file of its name), so a
pod holds no more of the Secret than it reads, and a missing key fails the pod's start
with a clear event. Callers pass each key once. Call with (dict "name" "tls" "secretName" "x" "keys" (list "a" "b")).
*/}}
{{- define "ponder.secretVolume" -}}
- name: {{ .name }}
  secret:
    secretName: {{ .secretName }}
    items:
      {{- range .keys }}
      - key: {{ . }}
        path: {{ . }}
      {{- end }}
{{- end }}

{{/*
TLS: the Secret every role mounts, the user's (tls.secretName) or, when that is empty,
the one the chart generates; the name the orchestrator expects in the workers'
certificate.
*/}}
{{- define "ponder.tls.generated" -}}
{{- if and .Values.tls.enabled (not .Values.tls.secretName) }}true{{ end }}
{{- end }}

{{- define "ponder.tls.secretName" -}}
{{- default (printf "%s-tls" (include "ponder.fullname" .)) .Values.tls.secretName }}
{{- end }}

{{- define "ponder.tls.caSecretName" -}}
{{- printf "%s-ca" (include "ponder.fullname" .) }}
{{- end }}

{{- define "ponder.tls.serverName" -}}
{{- default (printf "%s-worker" (include "ponder.fullname" .)) .Values.tls.serverName }}
{{- end }}

{{/*
The DNS names of the generated certificate (a JSON list): the server name, each role's
Service as clients may dial it, the helm test's name and tls.generate.extraDnsNames.
*/}}
{{- define "ponder.tls.dnsNames" -}}
{{- $full := include "ponder.fullname" . }}
{{- $ns := .Release.Namespace }}
{{- $names := list (include "ponder.tls.serverName" .) }}
{{- range $role := splitList "\n" (include "ponder.roles" .) }}
{{- $svc := printf "%s-%s" $full $role }}
{{- $names = concat $names (list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.%s" $svc $ns $.Values.clusterDomain)) }}
{{- end }}
{{- with .Values.tests.tlsServerName }}
{{- $names = append $names . }}
{{- end }}
{{- $names = concat $names .Values.tls.generate.extraDnsNames }}
{{- toJson (uniq $names) }}
{{- end }}

{{/*
The generated CA and certificate (a JSON object of PEM texts: caCrt, caKey, crt, key;
renewAfter, Unix seconds; names, the checksum of the DNS names). Computed once per
render and cached in .Values, because genCA is random and the Secret and the pods'
checksum must agree. On upgrade `lookup` finds the existing Secrets: the CA is kept,
and so is the certificate unless its names changed, it is past two thirds of its life
or the CA is new; then a new one is signed with the same CA. Under `helm template`
lookup finds nothing, so every render generates new ones.
*/}}
{{- define "ponder.tls.material" -}}
{{- if not (hasKey .Values "_ponderGeneratedTls") }}
{{- $g := .Values.tls.generate }}
{{- $names := include "ponder.tls.dnsNames" . | fromJsonArray }}
{{- $namesSum := toJson $names | sha256sum }}
{{- $now := now | unixEpoch | atoi }}
{{- $caOld := (lookup "v1" "Secret" .Release.Namespace (include "ponder.tls.caSecretName" .)) | default dict }}
{{- $caData := get $caOld "data" | default dict }}
{{- $ca := dict }}
{{- $caKept := false }}
{{- if and (get $caData "ca.crt") (get $caData "ca.key") }}
{{- $ca = buildCustomCert (get $caData "ca.crt") (get $caData "ca.key") }}
{{- $caKept = true }}
{{- else }}
{{- $ca = genCA (printf "%s cluster CA" (include "ponder.fullname" .)) (int $g.caDays) }}
{{- end }}
{{- $old := (lookup "v1" "Secret" .Release.Namespace (include "ponder.tls.secretName" .)) | default dict }}
{{- $data := get $old "data" | default dict }}
{{- $ann := dig "metadata" "annotations" dict $old }}
{{- $m := dict "caCrt" $ca.Cert "caKey" $ca.Key "names" $namesSum }}
{{- $crt := get $data .Values.tls.certKey }}
{{- $key := get $data .Values.tls.keyKey }}
{{- $renewAfter := get $ann "ponder/renew-after" | default "0" | atoi }}
{{- if and $caKept $crt $key (eq (get $data .Values.tls.caKey | default "" | b64dec) $ca.Cert) (eq (get $ann "ponder/dns-names-sha256") $namesSum) (lt $now $renewAfter) }}
{{- $_ := set $m "crt" (b64dec $crt) }}
{{- $_ := set $m "key" (b64dec $key) }}
{{- $_ := set $m "renewAfter" $renewAfter }}
{{- else }}
{{- $cert := genSignedCert (include "ponder.fullname" .) nil $names (int $g.certDays) $ca }}
{{- $_ := set $m "crt" $cert.Cert }}
{{- $_ := set $m "key" $cert.Key }}
{{- $_ := set $m "renewAfter" (add $now (div (mul (int $g.certDays) 86400 2) 3)) }}
{{- end }}
{{- $_ := set .Values "_ponderGeneratedTls" $m }}
{{- end }}
{{- toJson (get .Values "_ponderGeneratedTls") }}
{{- end }}

{{/*
etcd credentials. The bundled etcd with auth: its Secret (the user's etcd.auth.secretName
or the generated one). The roles' PONDER_ETCD_USER/PASSWORD come from
"ponder.etcdCredentials": a JSON object (secretName, userKey, passwordKey), or empty.
*/}}
{{- define "ponder.etcd.auth" -}}
{{- if and .Values.etcd.enabled .Values.etcd.auth.enabled }}true{{ end }}
{{- end }}

{{- define "ponder.etcd.authSecretName" -}}
{{- default (printf "%s-etcd-auth" (include "ponder.fullname" .)) .Values.etcd.auth.secretName }}
{{- end }}

{{- define "ponder.etcdCredentials" -}}
{{- if include "ponder.etcd.auth" . }}
{{- toJson (dict "secretName" (include "ponder.etcd.authSecretName" .) "userKey" "username" "passwordKey" "password") }}
{{- else if include "ponder.etcdAuth" . }}
{{- toJson .Values.etcd.externalAuth }}
{{- end }}
{{- end }}

{{/*
The Secret keys a role reads from tls.secretName and etcd.externalTls.secretName.
*/}}
{{- define "ponder.tlsKeys" -}}
{{- toJson (list .Values.tls.certKey .Values.tls.keyKey .Values.tls.caKey | uniq) }}
{{- end }}

{{- define "ponder.etcdTlsKeys" -}}
{{- $t := .Values.etcd.externalTls }}
{{- if $t.certKey }}
{{- toJson (list $t.caKey $t.certKey $t.keyKey | uniq) }}
{{- else }}
{{- toJson (list $t.caKey) }}
{{- end }}
{{- end }}

{{/*
Whether the role's pods get the external etcd's TLS files / credentials ("true" or "").
*/}}
{{- define "ponder.etcdTls" -}}
{{- if and (not .Values.etcd.enabled) .Values.etcd.externalTls.secretName }}true{{ end }}
{{- end }}

{{- define "ponder.etcdAuth" -}}
{{- if and (not .Values.etcd.enabled) .Values.etcd.externalAuth.secretName }}true{{ end }}
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
{{- if and .Values.tls.enabled .Values.tls.secretName (not .Values.tls.serverName) }}
{{- fail "tls.secretName (your own Secret) needs tls.serverName: a DNS name in the Secret's certificate that the orchestrator expects from the workers (they advertise pod IPs)" }}
{{- end }}
{{- range $role := splitList "\n" (include "ponder.roles" .) }}
{{- $port := int (index $.Values $role).port }}
{{- if or (eq $port (int $.Values.health.port)) (and $.Values.metrics.enabled (eq $port (int $.Values.metrics.port))) }}
{{- fail (printf "%s.port %d is also health.port or metrics.port; give each its own port" $role $port) }}
{{- end }}
{{- end }}
{{- if and .Values.metrics.enabled (eq (int .Values.health.port) (int .Values.metrics.port)) }}
{{- fail "health.port and metrics.port must differ" }}
{{- end }}
{{- with .Values.orchestrator.gateway }}
{{- if and $.Values.orchestrator.enabled .enabled }}
{{- $port := int .port }}
{{- if or (eq $port (int $.Values.orchestrator.port)) (eq $port (int $.Values.health.port)) (and $.Values.metrics.enabled (eq $port (int $.Values.metrics.port))) }}
{{- fail (printf "orchestrator.gateway.port %d is also orchestrator.port, health.port or metrics.port; give each its own port" $port) }}
{{- end }}
{{- if and $.Values.tls.enabled (eq $.Values.tls.clientAuth "required") }}
{{- fail "orchestrator.gateway asks callers for no client certificate (HTTPS, API keys and rate limits only), so it would open a way around tls.clientAuth=required: set orchestrator.gateway.enabled=false, or tls.clientAuth=none" }}
{{- end }}
{{- end }}
{{- end }}
{{- $mounts := list "/tmp" }}
{{- if ne .Values.models.source "image" }}{{ $mounts = append $mounts .Values.models.mountPath }}{{ end }}
{{- if or .Values.orchestrator.format .Values.orchestrator.policy }}{{ $mounts = append $mounts "/etc/ponder/orchestrator" }}{{ end }}
{{- if .Values.tls.enabled }}{{ $mounts = append $mounts .Values.tls.mountPath }}{{ end }}
{{- if include "ponder.etcdTls" . }}{{ $mounts = append $mounts .Values.etcd.externalTls.mountPath }}{{ end }}
{{- if .Values.orchestrator.apiKeys.secretName }}{{ $mounts = append $mounts .Values.orchestrator.apiKeys.mountPath }}{{ end }}
{{- if ne (len $mounts) (len (uniq $mounts)) }}
{{- fail (printf "tls.mountPath, etcd.externalTls.mountPath and orchestrator.apiKeys.mountPath must differ from each other, /tmp, models.mountPath and /etc/ponder/orchestrator: %s" (join ", " $mounts)) }}
{{- end }}
{{- with .Values.etcd }}
{{- if and .enabled (or .externalTls.secretName .externalAuth.secretName) }}
{{- fail "etcd.externalTls and etcd.externalAuth are for an external etcd (etcd.enabled=false); the bundled etcd uses etcd.auth" }}
{{- end }}
{{- if and (not .enabled) .auth.secretName }}
{{- fail "etcd.auth.secretName is for the bundled etcd; give an external etcd's credentials with etcd.externalAuth" }}
{{- end }}
{{- if not .enabled }}
{{- if and .externalTls.secretName (not (and .externalTls.certKey .externalTls.keyKey)) (or .externalTls.certKey .externalTls.keyKey) }}
{{- fail "etcd.externalTls: give both certKey and keyKey (a client certificate), or neither" }}
{{- end }}
{{- range .externalEndpoints }}
{{- if and $.Values.etcd.externalTls.secretName (hasPrefix "http://" .) }}
{{- fail (printf "etcd.externalEndpoints: %s is http:// but etcd.externalTls turns TLS on; use https://" .) }}
{{- end }}
{{- if and (not $.Values.etcd.externalTls.secretName) (hasPrefix "https://" .) }}
{{- fail (printf "etcd.externalEndpoints: %s is https:// and needs etcd.externalTls.secretName (a Secret with etcd's CA)" .) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- if .Values.tracing.otlpEndpoint }}
{{- $port := include "ponder.otlpPort" . | int }}
{{- if or (lt $port 1) (gt $port 65535) }}
{{- fail (printf "tracing.otlpEndpoint %s: the port %d is not a TCP port (1 to 65535)" .Values.tracing.otlpEndpoint $port) }}
{{- end }}
{{- end }}
{{- with .Values.orchestrator.rateLimit }}
{{- if and (not (kindIs "invalid" .burst)) (not (gt (float64 .perSecond) 0.0)) }}
{{- fail "orchestrator.rateLimit.burst needs orchestrator.rateLimit.perSecond > 0" }}
{{- end }}
{{- end }}
{{- if and .Values.tests.enabled .Values.orchestrator.enabled .Values.orchestrator.apiKeys.secretName (not .Values.tests.apiKey.secretName) }}
{{- fail "orchestrator.apiKeys needs tests.apiKey.secretName (a Secret holding one of the keys, bare) for the helm test, or tests.enabled=false" }}
{{- end }}
{{- if and (eq .Values.models.source "init") (not .Values.models.init.command) }}
{{- fail "models.source=init needs models.init.command (the command that fetches the models into models.mountPath)" }}
{{- end }}
{{- if and .Values.serviceMonitor.enabled (not .Values.metrics.enabled) }}
{{- fail "serviceMonitor.enabled needs metrics.enabled" }}
{{- end }}
{{- if and .Values.metrics.prometheusRule.enabled (not .Values.metrics.enabled) }}
{{- fail "metrics.prometheusRule.enabled needs metrics.enabled (its alerts read the roles' /metrics)" }}
{{- end }}
{{- if and .Values.metrics.dashboard.enabled (not .Values.metrics.enabled) }}
{{- fail "metrics.dashboard.enabled needs metrics.enabled (its panels read the roles' /metrics)" }}
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
{{- include "ponder.validateGroups" . }}
{{- $kedaQueries := dict }}
{{- range $w := .Values._ponderWorkloads }}
{{- $v := $w.values }}
{{- $role := include "ponder.workloadWhere" $w }}
{{- if and $v.enabled $v.autoscaling.enabled }}
{{- $a := $v.autoscaling }}
{{- if eq (include "ponder.autoscalingMode" $v) "keda" }}
{{- with $a.keda.query }}
{{- if hasKey $kedaQueries . }}
{{- fail (printf "%s and %s scale on the same autoscaling.keda.query; each Deployment needs a query over its own pods (give each generator group its own, or leave it empty for the default)" (get $kedaQueries .) $role) }}
{{- end }}
{{- $_ := set $kedaQueries . $role }}
{{- end }}
{{- if not $.Values.keda.serverAddress }}
{{- fail (printf "%s.autoscaling.mode=keda needs keda.serverAddress (the Prometheus KEDA queries, e.g. http://prometheus-operated.monitoring.svc:9090)" $role) }}
{{- end }}
{{- if not $.Values.metrics.enabled }}
{{- fail (printf "%s.autoscaling.mode=keda needs metrics.enabled (it scales on ponder_queue_depth)" $role) }}
{{- end }}
{{- else }}
{{- if and (not (kindIs "invalid" $a.targetCPUUtilizationPercentage)) (not (dig "requests" "cpu" "" $v.resources)) }}
{{- fail (printf "%s.autoscaling.targetCPUUtilizationPercentage needs %s.resources.requests.cpu (utilization is relative to the request)" $role $role) }}
{{- end }}
{{- if and (not (kindIs "invalid" $a.targetMemoryUtilizationPercentage)) (not (dig "requests" "memory" "" $v.resources)) }}
{{- fail (printf "%s.autoscaling.targetMemoryUtilizationPercentage needs %s.resources.requests.memory" $role $role) }}
{{- end }}
{{- if and (kindIs "invalid" $a.targetCPUUtilizationPercentage) (kindIs "invalid" $a.targetMemoryUtilizationPercentage) (not $a.metrics) }}
{{- fail (printf "%s.autoscaling: give a CPU or memory target or metrics" $role) }}
{{- end }}
{{- end }}
{{- if gt (int $a.minReplicas) (int $a.maxReplicas) }}
{{- fail (printf "%s.autoscaling.minReplicas is above maxReplicas" $role) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
