{{/*
Workloads: what gets a Deployment (and its HPA and PDB). One per role, except the
generator: one per generator.groups entry (README.md, "Generator groups").

"ponder.workloads" fills .Values._ponderWorkloads once per render (a list; templates
range over it after including this) with dicts:
  role    generator, verifier or orchestrator
  name    the object name suffix: the role, or generator-<group> (the group "default"
          keeps "generator", the single generator's names)
  group   the group's name ("" for verifier and orchestrator)
  legacy  true when the selector is the role's alone (verifier, orchestrator, and the
          group "default", whose selector predates groups and is immutable); other
          groups add ponder.dev/group to it
  values  the role's values; for a group, a copy of the generator block with the
          group's modelName and its replicas, autoscaling, resources and pdb
          deep-merged over it (a key the group gives replaces the default, null too)
  sha256  the group's expected model.safetensors digest ("" when not given)
  default the group's `default` flag
*/}}
{{- define "ponder.workloads" -}}
{{- if not (hasKey .Values "_ponderWorkloads") }}
{{- $out := list }}
{{- range $role := splitList "\n" (include "ponder.roles" .) }}
{{- $v := index $.Values $role }}
{{- if eq $role "generator" }}
{{- range $g := $v.groups }}
{{- $gv := omit $v "groups" | deepCopy }}
{{- range $k := list "replicas" "autoscaling" "resources" "pdb" }}
{{- if hasKey $g $k }}
{{- if and (kindIs "map" (get $g $k)) (kindIs "map" (get $gv $k)) }}
{{- include "ponder.mergeInto" (dict "dst" (get $gv $k) "src" (get $g $k)) }}
{{- else }}
{{- $_ := set $gv $k (get $g $k) }}
{{- end }}
{{- end }}
{{- end }}
{{- $_ := set $gv "modelName" (default $v.modelName (get $g "modelName")) }}
{{- $legacy := eq $g.name "default" }}
{{- $name := ternary "generator" (printf "generator-%s" $g.name) $legacy }}
{{- $out = append $out (dict "role" $role "name" $name "group" $g.name "legacy" $legacy "values" $gv "sha256" (get $g "sha256" | default "") "default" (get $g "default" | default false)) }}
{{- end }}
{{- else }}
{{- $out = append $out (dict "role" $role "name" $role "group" "" "legacy" true "values" $v "sha256" "" "default" false) }}
{{- end }}
{{- end }}
{{- $_ := set .Values "_ponderWorkloads" $out }}
{{- end }}
{{- end }}

{{/*
Deep-merges the map .src into the map .dst, in place: maps merge key by key, anything
else (lists, scalars, null) replaces. Call with (dict "dst" d "src" s).
*/}}
{{- define "ponder.mergeInto" -}}
{{- $dst := .dst }}
{{- range $k, $v := .src }}
{{- if and (kindIs "map" $v) (kindIs "map" (get $dst $k)) }}
{{- include "ponder.mergeInto" (dict "dst" (get $dst $k) "src" $v) }}
{{- else }}
{{- $_ := set $dst $k $v }}
{{- end }}
{{- end }}
{{- end }}

{{/*
A workload's labels and selector. Call with (dict "ctx" $ "w" $w). Generator groups
add ponder.dev/group (the group) and ponder.dev/model (the model it serves, when named)
to the role's labels; every generator group's pods keep the role's labels, so the
Service, the NetworkPolicies and the ServiceMonitor, which select on the role, select
them all.
*/}}
{{- define "ponder.workloadLabels" -}}
{{ include "ponder.labels" (dict "ctx" .ctx "component" .w.role) }}
{{- if .w.group }}
ponder.dev/group: {{ .w.group | quote }}
{{- with .w.values.modelName }}
ponder.dev/model: {{ . | quote }}
{{- end }}
{{- end }}
{{- end }}

{{- define "ponder.workloadSelector" -}}
{{ include "ponder.selectorLabels" (dict "ctx" .ctx "component" .w.role) }}
{{- if not .w.legacy }}
ponder.dev/group: {{ .w.group | quote }}
{{- end }}
{{- end }}

{{/*
Where a workload's values are, for messages: "generator", or generator.groups "name".
*/}}
{{- define "ponder.workloadWhere" -}}
{{- if .group }}{{ printf "generator.groups %q" .group }}{{ else }}{{ .role }}{{ end }}
{{- end }}

{{/*
PONDER_DEFAULT_MODEL of the orchestrator: orchestrator.defaultModel, else the modelName
of the generator group marked `default: true`, else empty (unset: the orchestrator
picks the model with the most serving generators).
*/}}
{{- define "ponder.defaultModel" -}}
{{- include "ponder.workloads" . }}
{{- $flagged := "" }}
{{- range .Values._ponderWorkloads }}
{{- if .default }}{{ $flagged = .values.modelName }}{{ end }}
{{- end }}
{{- default $flagged .Values.orchestrator.defaultModel }}
{{- end }}

{{/*
PONDER_EXPECT_MODEL of the orchestrator: generator=<modelName> for every generator group
and verifier=<modelName>, so that a member serving another model is refused
(services/cluster/src/member_check.rs takes several ids per role). Empty unless every
generator group and the verifier name their model: an unnamed one serves whatever its
models directory's manifest defaults to, which the chart cannot know.
*/}}
{{- define "ponder.expectModel" -}}
{{- include "ponder.workloads" . }}
{{- $ids := list }}
{{- $named := true }}
{{- range .Values._ponderWorkloads }}
{{- if and (has .role (list "generator" "verifier")) .values.enabled }}
{{- if .values.modelName }}
{{- $ids = append $ids (printf "%s=%s" .role .values.modelName) }}
{{- else }}
{{- $named = false }}
{{- end }}
{{- end }}
{{- end }}
{{- if and $named $ids }}{{ $ids | uniq | join "," }}{{ end }}
{{- end }}

{{/*
Checks of the generator groups (run once per render from "ponder.validate").
*/}}
{{- define "ponder.validateGroups" -}}
{{- include "ponder.workloads" . }}
{{- if .Values.generator.enabled }}
{{- $groups := .Values.generator.groups }}
{{- $names := list }}
{{- $flagged := list }}
{{- range $groups }}
{{- if has .name $names }}
{{- fail (printf "generator.groups: the name %q is given twice; each group needs its own name (it names the group's Deployment, HPA and PDB)" .name) }}
{{- end }}
{{- $names = append $names .name }}
{{- end }}
{{- if and (has "default" $names) (gt (len $names) 1) }}
{{- fail "generator.groups: the group \"default\" keeps the single generator's names and selector, which select every generator pod; with several groups give each its own name (README.md, \"Upgrading from the single generator\")" }}
{{- end }}
{{- range .Values._ponderWorkloads }}
{{- if .default }}
{{- $flagged = append $flagged .group }}
{{- if not .values.modelName }}
{{- fail (printf "generator.groups %q: default: true needs the group's modelName (the chart cannot know the id of the manifest's default model), or drop the flag and set orchestrator.defaultModel" .group) }}
{{- end }}
{{- if and $.Values.orchestrator.defaultModel (ne $.Values.orchestrator.defaultModel .values.modelName) }}
{{- fail (printf "orchestrator.defaultModel %q differs from the modelName %q of generator.groups %q, marked default: true; set one of them" $.Values.orchestrator.defaultModel .values.modelName .group) }}
{{- end }}
{{- end }}
{{- end }}
{{- if gt (len $flagged) 1 }}
{{- fail (printf "generator.groups: %s are all marked default: true; mark one" (join ", " $flagged)) }}
{{- end }}
{{- end }}
{{- end }}
