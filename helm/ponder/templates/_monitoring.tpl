{{/*
Monitoring and autoscaling helpers: the PrometheusRule (prometheusrule.yaml), the
dashboard ConfigMap (dashboard-configmap.yaml) and the KEDA ScaledObjects
(scaledobject.yaml). docs/metrics.md lists the series they use.
*/}}

{{/*
A workload's autoscaling mode (call with its values): keda, or cpu (the default; the
orchestrator has no mode and is always cpu).
*/}}
{{- define "ponder.autoscalingMode" -}}
{{- dig "autoscaling" "mode" "cpu" . | default "cpu" }}
{{- end }}

{{/*
A PromQL regex matching the pod names of Deployment .name: <name>-<pod-template-hash>-
<suffix>. The two generated parts hold no "-", so a generator group's regex matches none
of another group's pods (generator-a does not match generator-a-b-<hash>-<suffix>).
*/}}
{{- define "ponder.podRegex" -}}
{{- printf "%s-[a-z0-9]+-[a-z0-9]+" .name }}
{{- end }}

{{/*
The label matchers every series of this release gets in the rules: its namespace.
*/}}
{{- define "ponder.promNamespace" -}}
{{- printf "namespace=%q" .Release.Namespace }}
{{- end }}

{{/*
The default query of a workload's KEDA trigger: the requests in the model workers of its
Deployment's pods (ponder_queue_depth: decoding or waiting). KEDA divides it by the
replicas (metricType AverageValue) and compares that with autoscaling.keda.threshold.
Call with (dict "ctx" $ "w" $w).
*/}}
{{- define "ponder.kedaQuery" -}}
{{- $name := printf "%s-%s" (include "ponder.fullname" .ctx) .w.name }}
{{- printf "sum(ponder_queue_depth{%s,role=%q,pod=~%q})" (include "ponder.promNamespace" .ctx) .w.role (include "ponder.podRegex" (dict "name" $name)) }}
{{- end }}
