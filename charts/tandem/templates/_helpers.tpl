{{/*
Names. Every object is "<fullname>-<component>", so the Services that the
gateway and worker find each other by are "<fullname>-gateway" and
"<fullname>-worker".
*/}}
{{- define "tandem.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "tandem.fullname" -}}
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

{{/* "<fullname>-<component>"; call with (dict "root" $ "component" "gateway"). */}}
{{- define "tandem.componentName" -}}
{{- printf "%s-%s" (include "tandem.fullname" .root) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Labels. Selector labels are the stable subset (name, instance, component);
the NetworkPolicies select pods by exactly these.
*/}}
{{- define "tandem.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tandem.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "tandem.labels" -}}
{{ include "tandem.selectorLabels" . }}
app.kubernetes.io/part-of: tandem
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end -}}

{{/*
Image reference. Gateway and worker default their tag to appVersion; third
party images carry a digest, so the reference is immutable.
Call with (dict "root" $ "image" .Values.x.image).
*/}}
{{- define "tandem.image" -}}
{{- $tag := .image.tag | default .root.Chart.AppVersion -}}
{{- if .image.digest -}}
{{- printf "%s:%s@%s" .image.repository $tag .image.digest -}}
{{- else -}}
{{- printf "%s:%s" .image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/* In-cluster base URLs, built from Service names and the ports in values. */}}
{{- define "tandem.gatewayUrl" -}}
{{- printf "http://%s:%d" (include "tandem.componentName" (dict "root" . "component" "gateway")) (int .Values.gateway.port) -}}
{{- end -}}

{{/* The gateway's internal listener, behind a Service of its own: the worker's quota checks. */}}
{{- define "tandem.gatewayInternalName" -}}
{{- include "tandem.componentName" (dict "root" . "component" "gateway-internal") -}}
{{- end -}}

{{- define "tandem.gatewayInternalUrl" -}}
{{- printf "http://%s:%d" (include "tandem.gatewayInternalName" .) (int .Values.gateway.internalPort) -}}
{{- end -}}

{{- define "tandem.workerUrl" -}}
{{- printf "http://%s:%d" (include "tandem.componentName" (dict "root" . "component" "worker")) (int .Values.worker.port) -}}
{{- end -}}

{{/* Where the services send OTLP/gRPC: the release's collector or an external one. */}}
{{- define "tandem.otlpEndpoint" -}}
{{- if .Values.collector.enabled -}}
{{- printf "http://%s:%d" (include "tandem.componentName" (dict "root" . "component" "collector")) (int .Values.collector.ports.otlpGrpc) -}}
{{- else -}}
{{- required "collector.externalEndpoint is required when collector.enabled is false (the services need somewhere to send OTLP)" .Values.collector.externalEndpoint -}}
{{- end -}}
{{- end -}}

{{/* host:port the collector exports traces to. */}}
{{- define "tandem.tempoOtlpEndpoint" -}}
{{- if .Values.collector.tracesEndpoint -}}
{{- .Values.collector.tracesEndpoint -}}
{{- else if .Values.tempo.enabled -}}
{{- printf "%s:%d" (include "tandem.componentName" (dict "root" . "component" "tempo")) (int .Values.tempo.ports.otlpGrpc) -}}
{{- else -}}
{{- fail "collector.tracesEndpoint is required when tempo.enabled is false and collector.enabled is true (the collector needs somewhere to send traces)" -}}
{{- end -}}
{{- end -}}

{{/*
The agents' load_balancing resolver (OTELCOL_LB_RESOLVER in files/otelcol-agent.yaml), as
YAML: the k8s resolver on the gateway tier's headless Service, its OTLP/gRPC port.
*/}}
{{- define "tandem.lbResolver" -}}
{{- $svc := printf "%s.%s" (include "tandem.componentName" (dict "root" . "component" "collector-gateway")) .Release.Namespace -}}
{{- dict "k8s" (dict "service" $svc "ports" (list (int .Values.collector.gatewayTier.ports.otlpGrpc))) | toJson -}}
{{- end -}}

{{/* Tempo's query API, for Grafana and the test pod. */}}
{{- define "tandem.tempoQueryUrl" -}}
{{- if .Values.tempo.enabled -}}
{{- printf "http://%s:%d" (include "tandem.componentName" (dict "root" . "component" "tempo")) (int .Values.tempo.ports.http) -}}
{{- end -}}
{{- end -}}

{{/*
Pod-level settings every workload shares: no service account token (only the
two-tier agents talk to the Kubernetes API, with a projected token of their own), no Service links (they would add a *_SERVICE_HOST
variable per Service, and TANDEM_* names are the services' own settings), pull
secrets, scheduling.
Call with (dict "root" $ "values" .Values.x).
*/}}
{{- define "tandem.podCommon" -}}
serviceAccountName: {{ .serviceAccount | default (include "tandem.fullname" .root) }}
automountServiceAccountToken: false
enableServiceLinks: false
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .values.podSecurityContext | nindent 2 }}
{{- with .values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/*
NetworkPolicy peer selecting this release's pods of one or more components.
Call with (dict "root" $ "components" (list "gateway" "worker")).
*/}}
{{- define "tandem.peerComponents" -}}
- podSelector:
    matchLabels:
      app.kubernetes.io/name: {{ include "tandem.name" .root }}
      app.kubernetes.io/instance: {{ .root.Release.Name }}
    matchExpressions:
      - key: app.kubernetes.io/component
        operator: In
        values:
          {{- range .components }}
          - {{ . }}
          {{- end }}
{{- end -}}

{{/* Egress to cluster DNS, which every pod needs to resolve Service names. */}}
{{- define "tandem.dnsEgress" -}}
- to:
    {{- toYaml .Values.networkPolicy.dnsPeers | nindent 4 }}
  ports:
    - protocol: UDP
      port: 53
    - protocol: TCP
      port: 53
{{- end -}}

{{/* Port of a URL ("http://host:4317" -> 4317; a URL without one -> 443/80). */}}
{{- define "tandem.urlPort" -}}
{{- $u := urlParse . -}}
{{- $hostPort := splitList ":" $u.host -}}
{{- if gt (len $hostPort) 1 -}}
{{- last $hostPort -}}
{{- else if eq $u.scheme "https" -}}
443
{{- else -}}
80
{{- end -}}
{{- end -}}

{{/* Cross-field checks the JSON schema cannot express with a clear message. */}}
{{- define "tandem.validate" -}}
{{- if and (not .Values.collector.enabled) (not .Values.collector.externalEndpoint) -}}
{{- fail "collector.externalEndpoint is required when collector.enabled is false (the services need somewhere to send OTLP)" -}}
{{- end -}}
{{- if and .Values.collector.enabled (not .Values.tempo.enabled) (not .Values.collector.tracesEndpoint) -}}
{{- fail "collector.tracesEndpoint is required when tempo.enabled is false and collector.enabled is true (the collector needs somewhere to send traces)" -}}
{{- end -}}
{{- if eq (int .Values.gateway.port) (int .Values.gateway.internalPort) -}}
{{- fail "gateway.internalPort must differ from gateway.port (the internal listener needs a port of its own)" -}}
{{- end -}}
{{- if and (eq (toString .Values.prometheus.enabled) "true") (not .Values.collector.enabled) -}}
{{- fail "prometheus.enabled needs collector.enabled: the release's Prometheus scrapes the release's collector" -}}
{{- end -}}
{{- if and .Values.grafana.enabled (not .Values.tempo.enabled) (not .Values.grafana.tempoUrl) -}}
{{- fail "grafana.tempoUrl is required when grafana.enabled is true and tempo.enabled is false (the datasource needs a Tempo)" -}}
{{- end -}}
{{- range $component := list "gateway" "worker" -}}
{{- if hasKey (index $.Values $component).env "OTEL_PROPAGATORS" -}}
{{- fail (printf "set telemetry.propagators, not %s.env.OTEL_PROPAGATORS (the chart sets OTEL_PROPAGATORS from it, for both services, and the schema admits only the propagators the images ship)" $component) -}}
{{- end -}}
{{- $a := (index $.Values $component).autoscaling -}}
{{- if and $a.enabled (gt (int $a.minReplicas) (int $a.maxReplicas)) -}}
{{- fail (printf "%s.autoscaling.maxReplicas must be at least its minReplicas" $component) -}}
{{- end -}}
{{- end -}}
{{- range $name, $svc := .Values.extraServices -}}
{{- $key := printf "extraServices.%s" $name -}}
{{- range $caller := $svc.callers | default list -}}
{{- if eq $caller $name -}}
{{- fail (printf "%s.callers names %s itself" $key $name) -}}
{{- end -}}
{{- if not (or (has $caller (list "gateway" "worker")) (hasKey $.Values.extraServices $caller)) -}}
{{- fail (printf "%s.callers: %s is neither gateway, worker nor one of extraServices" $key $caller) -}}
{{- end -}}
{{- end -}}
{{- if hasKey ($svc.env | default dict) "OTEL_PROPAGATORS" -}}
{{- fail (printf "set telemetry.propagators, not %s.env.OTEL_PROPAGATORS (the chart sets OTEL_PROPAGATORS from it, for every service)" $key) -}}
{{- end -}}
{{- $a := (fromYaml (include "tandem.extraValues" (dict "root" $ "name" $name))).autoscaling -}}
{{- if and $a.enabled (gt (int $a.minReplicas) (int $a.maxReplicas)) -}}
{{- fail (printf "%s.autoscaling.maxReplicas must be at least its minReplicas" $key) -}}
{{- end -}}
{{- end -}}
{{- if .Values.tracecheck.enabled -}}
{{- if and (not .Values.tempo.enabled) (not .Values.tracecheck.tempoUrl) -}}
{{- fail "tracecheck.tempoUrl is required when tempo.enabled is false (or set tracecheck.enabled=false)" -}}
{{- end -}}
{{- if and (not .Values.collector.enabled) (not .Values.tracecheck.metricsUrl) -}}
{{- fail "tracecheck.metricsUrl is required when collector.enabled is false (or set tracecheck.enabled=false)" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
"true" when the release runs Prometheus: prometheus.enabled, or, left null, whenever
Grafana runs and there is a release collector to scrape. Empty otherwise.
*/}}
{{- define "tandem.prometheusEnabled" -}}
{{- $p := .Values.prometheus.enabled -}}
{{- if kindIs "bool" $p -}}
{{- if $p }}true{{ end -}}
{{- else if and .Values.grafana.enabled .Values.collector.enabled -}}
true
{{- end -}}
{{- end -}}

{{/* Prometheus's query URL, for Grafana. */}}
{{- define "tandem.prometheusUrl" -}}
{{- printf "http://%s:%d" (include "tandem.componentName" (dict "root" . "component" "prometheus")) (int .Values.prometheus.port) -}}
{{- end -}}
