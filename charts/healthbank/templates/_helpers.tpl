{{/* Release-scoped name prefix: "<release>" when it already says healthbank, else "<release>-healthbank". */}}
{{- define "healthbank.fullname" -}}
{{- if contains "healthbank" .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-healthbank" .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels shared by every object; pass (dict "root" $ "component" NAME). */}}
{{- define "healthbank.labels" -}}
{{ include "healthbank.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end -}}

{{- define "healthbank.selectorLabels" -}}
app.kubernetes.io/name: healthbank
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "healthbank.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The Vault/OpenBao Kubernetes-auth role of a service account's component. */}}
{{- define "healthbank.vaultRole" -}}
{{- printf "%s%s" .root.Values.keys.vault.rolePrefix .component -}}
{{- end -}}

{{/*
The HEALTHBANK_* settings of one component (pass (dict "root" $ "component" NAME
"settings" MAP)): the shared ones from values, then the component's own. Keys are field
names of healthbank.core.config.Settings; tests/deploy checks every one is a real setting.
*/}}
{{- define "healthbank.settings" -}}
{{- $v := .root.Values -}}
{{- $fullname := include "healthbank.fullname" .root -}}
{{- $out := dict
  "host" "0.0.0.0"
  "data_dir" "/var/lib/healthbank"
  "log_level" $v.logLevel
  "shutdown_grace_seconds" (toString $v.shutdownGraceSeconds)
  "dev_tokens" (toString $v.devTokens)
  "allow_dev_security" (toString $v.allowDevSecurity)
  "storage_backend" $v.storage.backend
  "key_provider" $v.keys.provider
  "cache_backend" $v.cache.backend
  "otlp_endpoint" (include "healthbank.otlpEndpoint" .root)
  "rate_limit_hospital_engine_per_second" (toString $v.rateLimits.hospitalEngine.perSecond)
  "rate_limit_hospital_engine_burst" (toString $v.rateLimits.hospitalEngine.burst)
  "rate_limit_clinician_per_second" (toString $v.rateLimits.clinician.perSecond)
  "rate_limit_clinician_burst" (toString $v.rateLimits.clinician.burst)
-}}
{{- range $name, $service := $v.services -}}
{{- $_ := set $out (printf "%s_addr" ($name | replace "-" "_")) (printf "%s-%s:%v" $fullname $name $service.port) -}}
{{- end -}}
{{- if eq $v.storage.backend "cassandra" -}}
{{- $_ := set $out "cassandra_hosts" (join "," $v.storage.cassandra.contactPoints) -}}
{{- $_ := set $out "cassandra_port" (toString $v.storage.cassandra.port) -}}
{{- $_ := set $out "cassandra_keyspace_prefix" $v.storage.cassandra.keyspacePrefix -}}
{{- $_ := set $out "cassandra_consistency" $v.storage.cassandra.consistency -}}
{{- $_ := set $out "cassandra_replication_factor" (toString $v.storage.cassandra.replicationFactor) -}}
{{- end -}}
{{- if eq $v.keys.provider "vault" -}}
{{- $_ := set $out "vault_addr" $v.keys.vault.addr -}}
{{- $_ := set $out "vault_auth_method" $v.keys.vault.authMethod -}}
{{- $_ := set $out "vault_k8s_role" (include "healthbank.vaultRole" .) -}}
{{- $_ := set $out "vault_transit_mount" $v.keys.vault.transitMount -}}
{{- end -}}
{{- if eq $v.cache.backend "redis" -}}
{{- $_ := set $out "redis_url" $v.cache.redisUrl -}}
{{- end -}}
{{- if $v.tls.enabled -}}
{{- $_ := set $out "tls_ca_file" "/etc/healthbank/tls/ca.crt" -}}
{{- $_ := set $out "tls_cert_file" "/etc/healthbank/tls/tls.crt" -}}
{{- $_ := set $out "tls_key_file" "/etc/healthbank/tls/tls.key" -}}
{{- end -}}
{{- range $field, $value := .settings -}}
{{- $_ := set $out $field (toString $value) -}}
{{- end -}}
{{- range $field, $value := $out }}
HEALTHBANK_{{ $field | upper }}: {{ $value | quote }}
{{- end -}}
{{- if include "healthbank.otlpEndpoint" .root }}
{{- /* The OpenTelemetry SDK's own variables: a caller's decision is kept, and a trace
       that starts here is recorded at telemetry.traceSampleRatio. */}}
OTEL_TRACES_SAMPLER: "parentbased_traceidratio"
OTEL_TRACES_SAMPLER_ARG: {{ $v.telemetry.traceSampleRatio | toString | quote }}
{{- end -}}
{{- end -}}

{{/* Secret-backed variables (pass the root context). */}}
{{- define "healthbank.secretEnv" -}}
{{- with .Values.secrets.existingSecret }}
- name: HEALTHBANK_AUTH_SECRET
  valueFrom:
    secretKeyRef: {name: {{ . }}, key: auth-secret}
{{- if eq $.Values.keys.provider "local" }}
- name: HEALTHBANK_KEYRING_PASSPHRASE
  valueFrom:
    secretKeyRef: {name: {{ . }}, key: keyring-passphrase}
{{- end }}
{{- end }}
{{- end -}}

{{/* The pod and container security settings every workload shares. */}}
{{- define "healthbank.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "healthbank.containerSecurityContext" -}}
runAsNonRoot: true
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
privileged: false
capabilities:
  drop: [ALL]
{{- end -}}

{{/* Volumes every workload mounts: the writable data dir, /tmp, and TLS when enabled. */}}
{{- define "healthbank.volumes" -}}
- name: data
{{- if .persistence.existingClaim }}
  persistentVolumeClaim:
    claimName: {{ .persistence.existingClaim }}
{{- else }}
  emptyDir:
    sizeLimit: {{ .persistence.sizeLimit }}
{{- end }}
- name: tmp
  emptyDir:
    sizeLimit: 256Mi
{{- if .root.Values.tls.enabled }}
- name: tls
  secret:
    secretName: {{ printf "%s-%s%s" (include "healthbank.fullname" .root) .component .root.Values.tls.secretSuffix }}
{{- end }}
{{- end -}}

{{- define "healthbank.volumeMounts" -}}
- name: data
  mountPath: /var/lib/healthbank
- name: tmp
  mountPath: /tmp
{{- if .root.Values.tls.enabled }}
- name: tls
  mountPath: /etc/healthbank/tls
  readOnly: true
{{- end }}
{{- end -}}

{{/* Where the services export: telemetry.otlpEndpoint, else the release's own collector. */}}
{{- define "healthbank.otlpEndpoint" -}}
{{- if .Values.telemetry.otlpEndpoint -}}
{{- .Values.telemetry.otlpEndpoint -}}
{{- else if .Values.observability.collector.enabled -}}
{{- printf "%s-otel-collector:4317" (include "healthbank.fullname" .) -}}
{{- end -}}
{{- end -}}
