{{/*
Helpers shared by every template.

The three services are rendered from one table ("wf.services") so that a Deployment,
Service, ConfigMap, migration Job, HPA, PDB and NetworkPolicy look the same for each.
Names, modules, prefixes and ports come from docs/conventions.md.
*/}}

{{/* The services: values key -> name, module, env prefix, port. */}}
{{- define "wf.services" -}}
definitionRegistry:
  name: definition-registry
  module: definition_registry
  prefix: DEFINITION_REGISTRY_
  port: 8001
orchestrator:
  name: orchestrator
  module: orchestrator
  prefix: ORCHESTRATOR_
  port: 8002
taskInbox:
  name: task-inbox
  module: task_inbox
  prefix: TASK_INBOX_
  port: 8003
{{- end }}

{{- define "wf.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* <release>-<chart>, or just <release> when it already holds the chart name. */}}
{{- define "wf.fullname" -}}
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

{{/* A component's object name: <fullname>-<component>, at most 63 characters. */}}
{{- define "wf.componentName" -}}
{{- printf "%s-%s" (include "wf.fullname" .root) .component | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "wf.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. Call with (dict "root" $ "component" "<name>"). */}}
{{- define "wf.labels" -}}
helm.sh/chart: {{ include "wf.chart" .root }}
{{ include "wf.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: {{ include "wf.name" .root }}
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "wf.selectorLabels" -}}
app.kubernetes.io/name: {{ include "wf.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- if .component }}
app.kubernetes.io/component: {{ .component }}
{{- end }}
{{- end }}

{{/* The image of a component: <registry>/<repository>[:<tag>][@<digest>]. */}}
{{- define "wf.image" -}}
{{- $image := .image }}
{{- $repository := $image.repository }}
{{- with .root.Values.image.registry }}
{{- $repository = printf "%s/%s" (trimSuffix "/" .) $image.repository }}
{{- end }}
{{- $tag := $image.tag | default .root.Values.image.tag | default .root.Chart.AppVersion }}
{{- if $image.digest }}
{{- printf "%s:%s@%s" $repository $tag $image.digest }}
{{- else }}
{{- printf "%s:%s" $repository $tag }}
{{- end }}
{{- end }}

{{- define "wf.pullPolicy" -}}
{{- .image.pullPolicy | default .root.Values.image.pullPolicy }}
{{- end }}

{{- define "wf.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "wf.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Name of the Secret the chart makes (database URLs, JWT settings, NATS credentials). */}}
{{- define "wf.secretName" -}}
{{- include "wf.fullname" . }}
{{- end }}

{{- define "wf.databaseSecretName" -}}
{{- .Values.database.existingSecret | default (include "wf.secretName" .) }}
{{- end }}

{{/* The Secret the migration Jobs read. It exists before the release's own objects do. */}}
{{- define "wf.migrationDatabaseSecretName" -}}
{{- .Values.database.existingSecret | default (printf "%s-migration" (include "wf.fullname" .)) }}
{{- end }}

{{- define "wf.authSecretName" -}}
{{- .Values.auth.existingSecret | default (include "wf.secretName" .) }}
{{- end }}

{{- define "wf.natsSecretName" -}}
{{- .Values.nats.auth.existingSecret | default (include "wf.secretName" .) }}
{{- end }}

{{/* Files mounted into the pods, and where. */}}
{{- define "wf.paths.natsCreds" -}}/etc/wf/nats/creds/nats.creds{{- end }}
{{- define "wf.paths.natsTLS" -}}/etc/wf/nats/tls{{- end }}
{{- define "wf.paths.jwtPublicKey" -}}/etc/wf/jwt/public.pem{{- end }}
{{- define "wf.paths.devPrivateKey" -}}/etc/wf/dev-login/private.pem{{- end }}

{{/*
NATS connection settings shared by the services and the worker: a dict of
<prefix>NATS_* -> value (file paths only; secrets go through secretKeyRef).
Call with (dict "root" $ "prefix" "<PREFIX>").
*/}}
{{- define "wf.natsSettings" -}}
{{- $v := .root.Values.nats }}
{{ .prefix }}NATS_URL: {{ $v.url | quote }}
{{- if eq $v.auth.mode "creds" }}
{{ .prefix }}NATS_CREDS_FILE: {{ include "wf.paths.natsCreds" . | quote }}
{{- end }}
{{- if $v.tls.enabled }}
{{ .prefix }}NATS_TLS_CA_FILE: {{ printf "%s/%s" (include "wf.paths.natsTLS" .) $v.tls.caKey | quote }}
{{- if $v.tls.certKey }}
{{ .prefix }}NATS_TLS_CERT_FILE: {{ printf "%s/%s" (include "wf.paths.natsTLS" .) $v.tls.certKey | quote }}
{{ .prefix }}NATS_TLS_KEY_FILE: {{ printf "%s/%s" (include "wf.paths.natsTLS" .) $v.tls.keyKey | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/* OpenTelemetry settings (standard OTEL_* variables). Call with (dict "root" $ "serviceName" "<name>"). */}}
{{- define "wf.otelSettings" -}}
{{- $o := .root.Values.otel }}
OTEL_SERVICE_NAME: {{ .serviceName | quote }}
{{- $version := .root.Values.image.tag | default .root.Chart.AppVersion }}
{{- $attributes := list (printf "service.version=%s" $version) (printf "service.namespace=%s" .root.Release.Namespace) }}
{{- with $o.resourceAttributes }}
{{- $attributes = append $attributes . }}
{{- end }}
OTEL_RESOURCE_ATTRIBUTES: {{ join "," $attributes | quote }}
{{- if $o.enabled }}
OTEL_TRACES_EXPORTER: "otlp"
OTEL_EXPORTER_OTLP_ENDPOINT: {{ $o.endpoint | quote }}
OTEL_EXPORTER_OTLP_PROTOCOL: {{ $o.protocol | quote }}
OTEL_TRACES_SAMPLER: {{ $o.tracesSampler | quote }}
OTEL_TRACES_SAMPLER_ARG: {{ $o.tracesSamplerArg | quote }}
{{- else }}
OTEL_TRACES_EXPORTER: "none"
{{- end }}
{{- end }}

{{/*
Every non-secret setting of one service, as a YAML map: the ConfigMap's data and the
migration Job's env. Call with (dict "root" $ "key" "<valuesKey>" "svc" <wf.services entry>).
*/}}
{{- define "wf.serviceSettings" -}}
{{- $root := .root }}
{{- $svc := .svc }}
{{- $p := $svc.prefix }}
{{- $values := index $root.Values .key }}
{{ $p }}HOST: "0.0.0.0"
{{ $p }}PORT: {{ $svc.port | quote }}
{{ $p }}LOG_LEVEL: {{ $values.logLevel | default $root.Values.logLevel | quote }}
{{ $p }}ACCESS_LOG: {{ $root.Values.accessLog | quote }}
{{ $p }}DB_POOL_SIZE: {{ $values.dbPoolSize | default $root.Values.database.poolSize | int64 | quote }}
{{ $p }}MAX_BODY_BYTES: {{ $root.Values.maxBodyBytes | int64 | quote }}
{{ $p }}JWT_ALGORITHMS: {{ $root.Values.auth.algorithms | quote }}
{{ $p }}JWT_LEEWAY_SECONDS: {{ $root.Values.auth.leewaySeconds | int64 | quote }}
{{- if $root.Values.auth.publicKeySecret.name }}
{{ $p }}JWT_PUBLIC_KEY_FILE: {{ include "wf.paths.jwtPublicKey" . | quote }}
{{- end }}
{{- include "wf.natsSettings" (dict "root" $root "prefix" $p) }}
{{- if eq .key "orchestrator" }}
{{ $p }}REGISTRY_URL: {{ $values.registryUrl | default (printf "http://%s:%v" (include "wf.componentName" (dict "root" $root "component" "definition-registry")) $root.Values.definitionRegistry.service.port) | quote }}
{{- end }}
{{- if eq .key "taskInbox" }}
{{ $p }}ORCHESTRATOR_URL: {{ $values.orchestratorUrl | default (printf "http://%s:%v" (include "wf.componentName" (dict "root" $root "component" "orchestrator")) $root.Values.orchestrator.service.port) | quote }}
{{ $p }}DEV_LOGIN: {{ $values.devLogin.enabled | quote }}
{{- if $values.devLogin.privateKeySecret.name }}
{{ $p }}DEV_PRIVATE_KEY_FILE: {{ include "wf.paths.devPrivateKey" . | quote }}
{{- end }}
{{- end }}
{{- include "wf.otelSettings" (dict "root" $root "serviceName" $svc.name) }}
{{- range $name, $value := $values.env }}
{{ $name }}: {{ $value | toString | quote }}
{{- end }}
{{- end }}

{{/* Secret-backed env of one service (database URL, JWT settings, NATS credentials, OTLP headers). */}}
{{- define "wf.serviceSecretEnv" -}}
{{- $root := .root }}
{{- $p := .svc.prefix }}
- name: {{ $p }}DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ .databaseSecret }}
      key: {{ index $root.Values.database.secretKeys .key }}
{{- include "wf.authEnv" (dict "root" $root "prefix" $p) }}
{{- include "wf.natsSecretEnv" (dict "root" $root "prefix" $p) }}
{{- include "wf.otelSecretEnv" $root }}
{{- end }}

{{- define "wf.authEnv" -}}
{{- $a := .root.Values.auth }}
{{- $secret := include "wf.authSecretName" .root }}
{{- if or $a.existingSecret $a.jwksUrl }}
- name: {{ .prefix }}JWT_JWKS_URL
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ $a.secretKeys.jwksUrl }}
      {{- if $a.existingSecret }}
      # Optional so that an existing Secret may hold a development setup (public key file, no JWKS).
      optional: true
      {{- end }}
{{- end }}
- name: {{ .prefix }}JWT_ISSUER
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ $a.secretKeys.issuer }}
- name: {{ .prefix }}JWT_AUDIENCE
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ $a.secretKeys.audience }}
{{- end }}

{{- define "wf.natsSecretEnv" -}}
{{- $n := .root.Values.nats.auth }}
{{- $secret := include "wf.natsSecretName" .root }}
{{- if eq $n.mode "token" }}
- name: {{ .prefix }}NATS_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ $n.secretKeys.token }}
{{- else if eq $n.mode "userPassword" }}
- name: {{ .prefix }}NATS_USER
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ $n.secretKeys.user }}
- name: {{ .prefix }}NATS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ $n.secretKeys.password }}
{{- end }}
{{- end }}

{{- define "wf.otelSecretEnv" -}}
{{- with .Values.otel.headersSecret }}
{{- if and $.Values.otel.enabled .name }}
- name: OTEL_EXPORTER_OTLP_HEADERS
  valueFrom:
    secretKeyRef:
      name: {{ .name }}
      key: {{ .key }}
{{- end }}
{{- end }}
{{- end }}

{{/* Volumes for NATS credentials / TLS files and the JWT public key; /tmp is always writable. */}}
{{- define "wf.volumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .root.Values.tmpSizeLimit }}
{{- $n := .root.Values.nats }}
{{- if eq $n.auth.mode "creds" }}
- name: nats-creds
  secret:
    secretName: {{ include "wf.natsSecretName" .root }}
    defaultMode: 0440
    items:
      - key: {{ $n.auth.secretKeys.creds }}
        path: nats.creds
{{- end }}
{{- if $n.tls.enabled }}
- name: nats-tls
  secret:
    secretName: {{ $n.tls.existingSecret }}
    defaultMode: 0440
{{- end }}
{{- if and .jwt .root.Values.auth.publicKeySecret.name }}
- name: jwt-public-key
  secret:
    secretName: {{ .root.Values.auth.publicKeySecret.name }}
    defaultMode: 0444
    items:
      - key: {{ .root.Values.auth.publicKeySecret.key }}
        path: public.pem
{{- end }}
{{- if .devLogin }}
- name: dev-login-key
  secret:
    secretName: {{ .devLogin.name }}
    defaultMode: 0440
    items:
      - key: {{ .devLogin.key }}
        path: private.pem
{{- end }}
{{- end }}

{{- define "wf.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
{{- $n := .root.Values.nats }}
{{- if eq $n.auth.mode "creds" }}
- name: nats-creds
  mountPath: {{ include "wf.paths.natsCreds" . | dir }}
  readOnly: true
{{- end }}
{{- if $n.tls.enabled }}
- name: nats-tls
  mountPath: {{ include "wf.paths.natsTLS" . }}
  readOnly: true
{{- end }}
{{- if and .jwt .root.Values.auth.publicKeySecret.name }}
- name: jwt-public-key
  mountPath: {{ include "wf.paths.jwtPublicKey" . | dir }}
  readOnly: true
{{- end }}
{{- if .devLogin }}
- name: dev-login-key
  mountPath: {{ include "wf.paths.devPrivateKey" . | dir }}
  readOnly: true
{{- end }}
{{- end }}

{{/* The default topology spread of a component: across zones, then nodes. */}}
{{- define "wf.topologySpread" -}}
{{- $t := .root.Values.topologySpread }}
{{- range $t.topologyKeys }}
- maxSkew: {{ $t.maxSkew }}
  topologyKey: {{ . }}
  whenUnsatisfiable: {{ $t.whenUnsatisfiable }}
  labelSelector:
    matchLabels:
      {{- include "wf.selectorLabels" $ | nindent 6 }}
  matchLabelKeys:
    - pod-template-hash
{{- end }}
{{- end }}

{{/* Pod-level scheduling fields shared by Deployments. Call with (dict "root" $ "values" <component values> "component" <name>). */}}
{{- define "wf.scheduling" -}}
{{- with .values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if .values.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml .values.topologySpreadConstraints | nindent 2 }}
{{- else if and .root.Values.topologySpread.enabled .root.Values.topologySpread.topologyKeys }}
topologySpreadConstraints:
  {{- include "wf.topologySpread" . | trim | nindent 2 }}
{{- end }}
{{- with .values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- end }}

{{/* Data of the Secret the chart makes: only what no existing Secret provides. */}}
{{- define "wf.secretData" -}}
{{- $v := .Values }}
{{- if not $v.database.existingSecret }}
{{- range $key, $secretKey := $v.database.secretKeys }}
{{ $secretKey }}: {{ index $v.database.urls $key | b64enc | quote }}
{{- end }}
{{- end }}
{{- if not $v.auth.existingSecret }}
{{- with $v.auth.jwksUrl }}
{{ $v.auth.secretKeys.jwksUrl }}: {{ . | b64enc | quote }}
{{- end }}
{{ $v.auth.secretKeys.issuer }}: {{ $v.auth.issuer | b64enc | quote }}
{{ $v.auth.secretKeys.audience }}: {{ $v.auth.audience | b64enc | quote }}
{{- end }}
{{- $n := $v.nats.auth }}
{{- if not $n.existingSecret }}
{{- if eq $n.mode "token" }}
{{ $n.secretKeys.token }}: {{ $n.token | b64enc | quote }}
{{- else if eq $n.mode "userPassword" }}
{{ $n.secretKeys.user }}: {{ $n.user | b64enc | quote }}
{{ $n.secretKeys.password }}: {{ $n.password | b64enc | quote }}
{{- else if eq $n.mode "creds" }}
{{ $n.secretKeys.creds }}: {{ $n.creds | b64enc | quote }}
{{- end }}
{{- end }}
{{- end }}
