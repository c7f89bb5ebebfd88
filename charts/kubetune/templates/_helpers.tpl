{{/* Chart name, overridable. */}}
{{- define "kubetune.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name of the release's objects: <release>-<chart> unless the release already says it. */}}
{{- define "kubetune.fullname" -}}
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

{{/* Labels that select the operator pods (never change across upgrades). */}}
{{- define "kubetune.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kubetune.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{/* Labels on every object of the chart. */}}
{{- define "kubetune.labels" -}}
{{ include "kubetune.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kubetune
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The operator's ServiceAccount name. */}}
{{- define "kubetune.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "kubetune.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* repository:tag or repository@digest; the tag defaults to the chart's appVersion. */}}
{{- define "kubetune.imageRef" -}}
{{- $img := index . 0 -}}
{{- $appVersion := index . 1 -}}
{{- if $img.digest -}}
{{- printf "%s@%s" $img.repository $img.digest -}}
{{- else -}}
{{- printf "%s:%s" $img.repository (default $appVersion $img.tag) -}}
{{- end -}}
{{- end -}}

{{/* Namespaces the operator watches: the listed ones (namespaced scope) or none (all). */}}
{{- define "kubetune.watchNamespaces" -}}
{{- if eq .Values.rbac.scope "namespaced" -}}
{{- required "rbac.namespaces must list at least one namespace when rbac.scope is namespaced" (join "," .Values.rbac.namespaces) -}}
{{- end -}}
{{- end -}}

{{/*
Permissions the operator needs in each namespace it watches, and no more. Children are created
(supporting objects that exist already are read, to check that the job owns them, and then
server-side applied: patch; pods never change) and cleaned up through owner references, so
only pods (ended attempts) and FineTuneJobs (ttlSecondsAfterFinished) are deleted.
FineTuneSweeps and FineTuneSchedules create FineTuneJobs (their trials and runs, deleted when a
trial is stopped early or a run leaves the history) and a schedule's short-lived data-watch
pods. The per-job Role it grants the trainer (get this job, get/patch its status) is a subset
of these grants, so neither escalate nor bind is needed. update on <kind>/finalizers lets it
set blockOwnerDeletion on children a FineTuneJob, sweep or schedule owns where the
OwnerReferencesPermissionEnforcement admission plugin is on (OpenShift); it changes no object
by itself.
*/}}
{{- define "kubetune.namespacedRules" -}}
- apiGroups: ["kubetune.dev"]
  resources: ["finetunejobs"]
  verbs: ["get", "list", "watch", "create", "delete"]
- apiGroups: ["kubetune.dev"]
  resources: ["finetunesweeps", "finetuneschedules"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["kubetune.dev"]
  resources: ["finetunejobs/status", "finetunesweeps/status", "finetuneschedules/status"]
  verbs: ["get", "patch"]
- apiGroups: ["kubetune.dev"]
  resources: ["finetunejobs/finalizers", "finetunesweeps/finalizers", "finetuneschedules/finalizers"]
  verbs: ["update"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch", "create", "delete"]
- apiGroups: [""]
  resources: ["services", "configmaps", "serviceaccounts"]
  verbs: ["get", "create", "patch"]
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["roles", "rolebindings"]
  verbs: ["get", "create", "patch"]
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["get", "create", "patch"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
# The namespace's checkpoint key, made once; never read or changed (pods reference it).
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["create"]
- apiGroups: ["kopf.dev"]
  resources: ["kopfpeerings"]
  verbs: ["list", "watch", "patch"]
{{- if .Values.queueing.kueue }}
# Kueue: the Workload of each queued job (created, deactivated while suspended); its status
# is patched to hand the quota back after an eviction and to mark it PodsReady and Finished.
- apiGroups: ["kueue.x-k8s.io"]
  resources: ["workloads"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: ["kueue.x-k8s.io"]
  resources: ["workloads/status"]
  verbs: ["patch"]
{{- end }}
{{- if .Values.queueing.gangSchedulers }}
# Gang schedulers: the PodGroup of each gang-scheduled job (read before a later attempt
# applies it, so a namesake the job does not own is never taken over).
- apiGroups: ["scheduling.x-k8s.io", "scheduling.volcano.sh"]
  resources: ["podgroups"]
  verbs: ["create", "get", "patch"]
{{- end }}
{{- end -}}

{{/*
Cluster-scoped objects a queued job's admission names: the ResourceFlavors whose node labels
and tolerations the workers get, and the (Workload)PriorityClass its Workload's priority comes
from. Read only.
*/}}
{{- define "kubetune.kueueClusterReads" -}}
- apiGroups: ["kueue.x-k8s.io"]
  resources: ["resourceflavors", "workloadpriorityclasses"]
  verbs: ["get"]
- apiGroups: ["scheduling.k8s.io"]
  resources: ["priorityclasses"]
  verbs: ["get"]
{{- end -}}

{{/*
"true" when jobs get a NetworkPolicy: networkPolicy.enabled, or with auto, when the cluster
serves the API group of a network plugin that enforces NetworkPolicies.
*/}}
{{- define "kubetune.networkPolicy" -}}
{{- $on := .Values.networkPolicy.enabled -}}
{{- if eq (toString $on) "auto" -}}
{{- $on = false -}}
{{- range list "cilium.io/v2" "crd.projectcalico.org/v1" "projectcalico.org/v3" "crd.antrea.io/v1beta1" -}}
{{- if $.Capabilities.APIVersions.Has . }}{{ $on = true }}{{ end -}}
{{- end -}}
{{- end -}}
{{- toString $on -}}
{{- end -}}
