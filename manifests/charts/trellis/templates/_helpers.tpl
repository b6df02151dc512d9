{{/* The control plane's namespace: spec.namespace, else values.global.istioNamespace. */}}
{{- define "trellis.namespace" -}}
{{- .Values.namespace | default .Values.values.global.istioNamespace | default "istio-system" -}}
{{- end }}

{{/* Labels of every object: the install label (uninstall deletes by it),
     the component, and the extra labels given as "extra". */}}
{{- define "trellis.labels" -}}
{{- $l := dict "trellis.io/install" (.root.Values.ownerName | default "installed-state") "operator.istio.io/component" .component -}}
{{- range $k, $v := .extra }}{{ $_ := set $l $k $v }}{{ end -}}
{{- toYaml $l -}}
{{- end }}

{{/* <hub>/<name>:<tag>, or the name itself when it is a full reference. */}}
{{- define "trellis.image" -}}
{{- $g := .root.Values.values.global -}}
{{- if or (contains "/" .name) (contains ":" .name) -}}
{{ .name }}
{{- else -}}
{{ .root.Values.hub | default $g.hub }}/{{ .name }}:{{ .root.Values.tag | default $g.tag }}
{{- end -}}
{{- end }}

{{/* The hardened container security context of the control plane and gateways. */}}
{{- define "trellis.securityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: 1337
runAsGroup: 1337
capabilities:
  drop: [ALL]
{{- end }}

{{/* A PodDisruptionBudget: .name, .labels, .selector, .spec (k8s.podDisruptionBudget). */}}
{{- define "trellis.pdb" -}}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ .name }}
  namespace: {{ .namespace }}
  labels:
    {{- .labels | nindent 4 }}
spec:
  {{- $s := .spec | default dict }}
  {{- if or (hasKey $s "minAvailable") (hasKey $s "maxUnavailable") }}
  {{- with $s.minAvailable }}
  minAvailable: {{ . }}
  {{- end }}
  {{- with $s.maxUnavailable }}
  maxUnavailable: {{ . }}
  {{- end }}
  {{- else }}
  minAvailable: 1
  {{- end }}
  selector:
    matchLabels:
      {{- toYaml .selector | nindent 6 }}
{{- end }}

{{/* An autoscaling/v2 HPA: .name, .namespace, .labels, .min, .max, .metrics, .utilization. */}}
{{- define "trellis.hpa" -}}
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ .name }}
  namespace: {{ .namespace }}
  labels:
    {{- .labels | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ .name }}
  minReplicas: {{ .min }}
  maxReplicas: {{ .max }}
  metrics:
  {{- if .metrics }}
  {{- toYaml .metrics | nindent 2 }}
  {{- else }}
  - type: Resource
    resource:
      name: cpu
      target:
        type: Utilization
        averageUtilization: {{ .utilization }}
  {{- end }}
{{- end }}
