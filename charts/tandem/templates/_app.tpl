{{/*
The gateway and the worker are the same kind of workload: a hypercorn app
configured by environment variables, probed on /healthz and /readyz.
Call with (dict "root" $ "component" "gateway" "values" .Values.gateway
               "env" (list of extra {name, value} for this component)
               "ports" (list of extra {name, containerPort} for this component)
               "valuesKey" (where the values live, if not at .Values.<component>)).
*/}}
{{- define "tandem.app.deployment" -}}
{{- $root := .root -}}
{{- $v := .values -}}
{{- $ctx := dict "root" $root "component" .component -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "tandem.componentName" $ctx }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "tandem.labels" $ctx | nindent 4 }}
  {{- if not $v.image.digest }}
  annotations:
    checkov.io/skip1: CKV_K8S_43=Built by this project (make images / skaffold); its digest exists only after the build, and skaffold then deploys tag@digest. Set {{ .valuesKey | default .component }}.image.digest to pin one.
    checkov.io/skip2: CKV_K8S_15=Built locally and loaded into the cluster (kind/minikube), in no registry, so Always would fail the pull; every build gets its own tag (appVersion, or skaffold's tag@digest), so IfNotPresent cannot run a stale image.
  {{- end }}
spec:
  {{- if not $v.autoscaling.enabled }}
  replicas: {{ $v.replicaCount }}
  {{- end }}
  revisionHistoryLimit: 5
  strategy:
    type: RollingUpdate
    rollingUpdate:
      # Never drop below the desired count during a rollout.
      maxUnavailable: 0
      maxSurge: 1
  selector:
    matchLabels:
      {{- include "tandem.selectorLabels" $ctx | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "tandem.labels" $ctx | nindent 8 }}
      {{- with $v.podAnnotations }}
      annotations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
    spec:
      {{- include "tandem.podCommon" (dict "root" $root "values" $v) | nindent 6 }}
      # preStop sleep + hypercorn's graceful timeout + a margin before SIGKILL.
      terminationGracePeriodSeconds: {{ add $v.preStopSleepSeconds $v.gracefulTimeoutSeconds 5 }}
      containers:
        - name: {{ .component }}
          image: {{ include "tandem.image" (dict "root" $root "image" $v.image) | quote }}
          imagePullPolicy: {{ $v.image.pullPolicy }}
          ports:
            - name: http
              containerPort: {{ $v.port }}
              protocol: TCP
            {{- range .ports }}
            - name: {{ .name }}
              containerPort: {{ .containerPort }}
              protocol: TCP
            {{- end }}
          env:
            # Downward API first: OTEL_RESOURCE_ATTRIBUTES below interpolates
            # them with $(VAR), which only sees variables defined earlier.
            - name: POD_NAME
              valueFrom:
                fieldRef:
                  fieldPath: metadata.name
            - name: POD_NAMESPACE
              valueFrom:
                fieldRef:
                  fieldPath: metadata.namespace
            - name: NODE_NAME
              valueFrom:
                fieldRef:
                  fieldPath: spec.nodeName
            - name: HOST
              value: "0.0.0.0"
            - name: PORT
              value: {{ $v.port | quote }}
            - name: WEB_CONCURRENCY
              value: {{ $v.webConcurrency | quote }}
            - name: GRACEFUL_TIMEOUT
              value: {{ $v.gracefulTimeoutSeconds | quote }}
            - name: MAX_IN_FLIGHT
              value: {{ $v.maxInFlight | quote }}
            - name: LOG_LEVEL
              value: {{ $v.logLevel | quote }}
            - name: TANDEM_UNTRUSTED_CONTEXT
              value: {{ $v.untrustedContext | quote }}
            {{- with $v.untracedPaths }}
            - name: TANDEM_UNTRACED_PATHS
              value: {{ . | quote }}
            {{- end }}
            {{- with .env }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
            - name: OTEL_SERVICE_NAME
              value: {{ $v.serviceName | quote }}
            - name: OTEL_EXPORTER_OTLP_ENDPOINT
              value: {{ include "tandem.otlpEndpoint" $root | quote }}
            - name: OTEL_EXPORTER_OTLP_INSECURE
              value: {{ ternary true $root.Values.collector.externalInsecure $root.Values.collector.enabled | quote }}
            - name: OTEL_RESOURCE_ATTRIBUTES
              value: {{ include "tandem.resourceAttributes" $root | quote }}
            - name: OTEL_TRACES_SAMPLER
              value: {{ $root.Values.telemetry.tracesSampler | quote }}
            {{- with $root.Values.telemetry.tracesSamplerArg }}
            - name: OTEL_TRACES_SAMPLER_ARG
              value: {{ . | quote }}
            {{- end }}
            - name: OTEL_PROPAGATORS
              value: {{ join "," $root.Values.telemetry.propagators | quote }}
            - name: OTEL_METRIC_EXPORT_INTERVAL
              value: {{ $root.Values.telemetry.metricExportIntervalMillis | quote }}
            {{- range $name, $value := $v.env }}
            - name: {{ $name }}
              value: {{ $value | toString | quote }}
            {{- end }}
          startupProbe:
            # Importing the OpenTelemetry SDK and grpc takes a few seconds on
            # a cold node; allow up to a minute before liveness takes over.
            httpGet:
              path: /healthz
              port: http
            periodSeconds: 2
            failureThreshold: 30
          # Both probes are exempt from the admission limit, so an overloaded pod
          # stays ready and alive: it sheds what it cannot take instead of handing
          # its share to the other pods. They still wait their turn in a busy event
          # loop: /readyz took up to 0.1 s at 16x overload and 2.1 s at 512
          # connections (docs/benchmarks.md, section 7), hence 5 s timeouts.
          livenessProbe:
            httpGet:
              path: /healthz
              port: http
            periodSeconds: 10
            timeoutSeconds: 5
            failureThreshold: 3
          readinessProbe:
            httpGet:
              path: /readyz
              port: http
            periodSeconds: 5
            timeoutSeconds: 5
            failureThreshold: 2
          lifecycle:
            preStop:
              exec:
                command: ["sleep", {{ $v.preStopSleepSeconds | quote }}]
          resources:
            {{- toYaml $v.resources | nindent 12 }}
          securityContext:
            {{- toYaml $v.containerSecurityContext | nindent 12 }}
          volumeMounts:
            # The only writable path: the root filesystem is read-only.
            - name: tmp
              mountPath: /tmp
      volumes:
        - name: tmp
          emptyDir:
            sizeLimit: 64Mi
{{- end -}}

{{/*
OTEL_RESOURCE_ATTRIBUTES: service.version from appVersion, the Kubernetes
attributes from the downward API variables, then telemetry.resourceAttributes.
*/}}
{{- define "tandem.resourceAttributes" -}}
{{- $attrs := list (printf "service.version=%s" .Chart.AppVersion) "k8s.pod.name=$(POD_NAME)" "k8s.namespace.name=$(POD_NAMESPACE)" "k8s.node.name=$(NODE_NAME)" -}}
{{- range $k, $v := .Values.telemetry.resourceAttributes -}}
{{- $attrs = append $attrs (printf "%s=%s" $k (toString $v)) -}}
{{- end -}}
{{- join "," $attrs -}}
{{- end -}}

{{- define "tandem.app.service" -}}
{{- $ctx := dict "root" .root "component" .component -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "tandem.componentName" $ctx }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "tandem.labels" $ctx | nindent 4 }}
spec:
  type: {{ .values.service.type }}
  selector:
    {{- include "tandem.selectorLabels" $ctx | nindent 4 }}
  ports:
    - name: http
      port: {{ .values.port }}
      targetPort: http
      protocol: TCP
{{- end -}}

{{- define "tandem.app.pdb" -}}
{{- $ctx := dict "root" .root "component" .component -}}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "tandem.componentName" $ctx }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "tandem.labels" $ctx | nindent 4 }}
spec:
  maxUnavailable: {{ .values.podDisruptionBudget.maxUnavailable }}
  selector:
    matchLabels:
      {{- include "tandem.selectorLabels" $ctx | nindent 6 }}
{{- end -}}


{{/*
An optional HorizontalPodAutoscaler on average CPU (<component>.autoscaling).
*/}}
{{- define "tandem.app.hpa" -}}
{{- $ctx := dict "root" .root "component" .component -}}
{{- $a := .values.autoscaling -}}
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ include "tandem.componentName" $ctx }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "tandem.labels" $ctx | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ include "tandem.componentName" $ctx }}
  minReplicas: {{ $a.minReplicas }}
  maxReplicas: {{ $a.maxReplicas }}
  metrics:
    - type: Resource
      resource:
        name: cpu
        target:
          type: AverageValue
          averageValue: {{ $a.averageCPU | quote }}
{{- end -}}


{{/*
A service of the user's own, extraServices.<name> (docs/add-a-service.md), as
YAML to read back with fromYaml: the worker's values with the service's keys
over them. A key the service sets replaces the worker's whole value, but for
image, whose tag and pullPolicy default as the worker's. serviceName defaults
to the name; env is the service's only (the worker's is for the worker).
Call with (dict "root" $ "name" "ledger").
*/}}
{{- define "tandem.extraValues" -}}
{{- $own := index .root.Values.extraServices .name -}}
{{- $v := omit (deepCopy .root.Values.worker) "image" "env" -}}
{{- $_ := set $v "serviceName" .name -}}
{{- $_ := set $v "env" dict -}}
{{- range $key, $value := $own -}}
{{- $_ := set $v $key $value -}}
{{- end -}}
{{- $image := dict "tag" "" "pullPolicy" .root.Values.worker.image.pullPolicy -}}
{{- $_ := set $v "image" (mergeOverwrite $image (deepCopy $own.image)) -}}
{{- toYaml $v -}}
{{- end -}}

{{/*
The <NAME>_URL variables of a component that calls extra services: one per
service naming it among its callers, its Service's in-cluster URL. A YAML list
of {name, value}, for fromYamlArray; empty when it calls none.
Call with (dict "root" $ "caller" "gateway").
*/}}
{{- define "tandem.callerEnv" -}}
{{- $root := .root -}}
{{- range $name, $svc := $root.Values.extraServices -}}
{{- if has $.caller ($svc.callers | default list) }}
- name: {{ printf "%s_URL" ($name | upper | replace "-" "_") }}
  value: {{ printf "http://%s:%d" (include "tandem.componentName" (dict "root" $root "component" $name)) (int $svc.port) | quote }}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
NetworkPolicy egress rules of a component to the extra services it calls;
empty when it calls none. Call with (dict "root" $ "caller" "gateway").
*/}}
{{- define "tandem.calleeEgress" -}}
{{- $root := .root -}}
{{- range $name, $svc := $root.Values.extraServices -}}
{{- if has $.caller ($svc.callers | default list) }}
- to:
    {{- include "tandem.peerComponents" (dict "root" $root "components" (list $name)) | nindent 4 }}
  ports:
    - protocol: TCP
      port: {{ $svc.port }}
{{- end -}}
{{- end -}}
{{- end -}}
