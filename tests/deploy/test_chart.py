"""The Helm chart: lint, render, validate offline, and the structure every workload needs.

The call graph the NetworkPolicies admit is checked against the authorization table
(healthbank.rpc.authz), the one place the code says which service may call which.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_tools import (
    CHART,
    KUBERNETES_VERSION,
    SCHEMAS,
    VALUE_SETS,
    documents,
    pod_specs,
    render,
    run,
    tool,
)
from repo_paths import REPO

from healthbank.core.config import SERVICE_NAMES, Settings, env_name
from healthbank.rpc.authz import AUTHORIZATION_TABLE, INTERNAL_SERVICES

_COMPONENT = "app.kubernetes.io/component"


def _component(obj: dict[str, Any]) -> str:
    return str(obj["metadata"]["labels"][_COMPONENT])


def _of_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {_component(obj): obj for obj in objects if obj["kind"] == kind}


def _services_of_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    """The objects of the seven healthbank services (not the collector, not the jobs)."""
    return {name: obj for name, obj in _of_kind(objects, kind).items() if name in SERVICE_NAMES}


def _settings_config_maps(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The ConfigMaps workloads read their settings from (envFrom), by component."""
    names = {
        source["configMapRef"]["name"]
        for _, pod in pod_specs(objects)
        for source in pod["containers"][0].get("envFrom", [])
    }
    return {
        _component(obj): obj
        for obj in objects
        if obj["kind"] == "ConfigMap" and obj["metadata"]["name"] in names
    }


def authorized_call_graph() -> dict[str, set[str]]:
    """Service -> the internal services (and jobs) the authorization table lets call it."""
    graph: dict[str, set[str]] = defaultdict(set)
    for method, rule in AUTHORIZATION_TABLE.items():
        package = method.split("/")[1].split(".")
        if package[0] != "healthbank":
            continue  # health and reflection: probes, no service calls
        graph[package[1].replace("_", "-")] |= rule.services
    return {service: graph.get(service, set()) for service in SERVICE_NAMES}


def externally_called() -> set[str]:
    """Services with any caller that is not another service (engines, people, witnesses)."""
    return {
        method.split("/")[1].split(".")[1].replace("_", "-")
        for method, rule in AUTHORIZATION_TABLE.items()
        if method.startswith("/healthbank.") and (rule.callers or rule.public)
    }


# --- lint, render, validate ---


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_helm_lint_strict_is_clean(helm: Path, value_set: str) -> None:
    command: list[str | Path] = [helm, "lint", "--strict", CHART]
    for path in VALUE_SETS[value_set]:
        command += ["--values", path]
    result = run(command)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


def test_every_value_set_renders_all_seven_services(rendered: dict[str, str]) -> None:
    for value_set, manifest in rendered.items():
        deployments = _services_of_kind(documents(manifest), "Deployment")
        assert sorted(deployments) == sorted(SERVICE_NAMES), value_set


def test_rendered_manifests_pass_kubeconform_offline(rendered: dict[str, str]) -> None:
    kubeconform = tool("kubeconform")
    assert kubeconform is not None, "kubeconform is not installed: run install_tools.sh"
    location = f"{SCHEMAS}/{{{{ .NormalizedKubernetesVersion }}}}-local-strict/"
    location += "{{ .ResourceKind }}{{ .KindSuffix }}.json"
    for value_set, manifest in rendered.items():
        result = run(
            [
                kubeconform,
                "-strict",
                "-summary",
                "-kubernetes-version",
                KUBERNETES_VERSION,
                "-schema-location",
                location,
            ],
            input=manifest,
        )
        assert result.returncode == 0, f"{value_set}: {result.stdout}{result.stderr}"
        # Every object was checked against a schema: none skipped for want of one.
        assert re.search(r"Valid: [1-9]\d*, Invalid: 0, Errors: 0, Skipped: 0", result.stdout)


def test_values_schema_refuses_an_unknown_key_and_a_bad_consistency(helm: Path) -> None:
    for bad in ("storage.cassandra.consistency=SOME", "services.ingest.prot=1"):
        result = run([helm, "template", "hb", CHART, "--set", bad])
        assert result.returncode != 0, bad
        assert "values don't meet the specifications of the schema" in result.stderr


def test_termination_grace_shorter_than_the_drain_is_refused(helm: Path) -> None:
    result = run([helm, "template", "hb", CHART, "--set", "shutdownGraceSeconds=40"])
    assert result.returncode != 0
    assert "must be longer than shutdownGraceSeconds" in result.stderr


# --- every workload ---


def test_every_workload_has_probes_resources_and_a_locked_down_security_context(
    objects: list[dict[str, Any]],
) -> None:
    workloads = dict(pod_specs(objects))
    assert workloads
    for name, pod in workloads.items():
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        (container,) = pod["containers"]
        security = container["securityContext"]
        assert security["runAsNonRoot"] is True, name
        assert security["readOnlyRootFilesystem"] is True, name
        assert security["allowPrivilegeEscalation"] is False, name
        assert security["capabilities"]["drop"] == ["ALL"], name
        assert "add" not in security["capabilities"], name
        assert container["resources"]["requests"] and container["resources"]["limits"], name
        if name.startswith("Deployment/") and name.rsplit("-", 1)[-1] != "collector":
            port = container["ports"][0]["containerPort"]
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                assert container[probe]["grpc"] == {"port": port}, (name, probe)
        elif name.startswith("Deployment/"):
            assert container["readinessProbe"] and container["livenessProbe"], name


def test_deployments_spread_and_outlive_their_drain(objects: list[dict[str, Any]]) -> None:
    for component, deployment in _services_of_kind(objects, "Deployment").items():
        pod = deployment["spec"]["template"]["spec"]
        config = _of_kind(objects, "ConfigMap")[component]["data"]
        drain = float(config[env_name("shutdown_grace_seconds")])
        assert pod["terminationGracePeriodSeconds"] > drain, component
        keys = {constraint["topologyKey"] for constraint in pod["topologySpreadConstraints"]}
        assert keys == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}, component
        assert pod["containers"][0]["args"] == [component]  # after `healthbank serve`


def test_every_service_has_a_service_pdb_and_service_account(objects: list[dict[str, Any]]) -> None:
    for kind in ("Service", "PodDisruptionBudget", "ServiceAccount", "ConfigMap"):
        assert set(SERVICE_NAMES) <= set(_of_kind(objects, kind)), kind


def test_cronjobs_run_archive_tiering_as_its_own_service(objects: list[dict[str, Any]]) -> None:
    cronjobs = _of_kind(objects, "CronJob")
    args = cronjobs["archive-tiering"]["spec"]["jobTemplate"]["spec"]["template"]["spec"][
        "containers"
    ][0]["args"]
    assert args[:2] == ["archive", "tier"]
    assert "archive-tiering" in INTERNAL_SERVICES


def test_audit_scrub_cronjob_verifies_the_log_with_the_auditor_token(helm: Path) -> None:
    key = "ab" * 32
    objects = documents(
        render(
            helm,
            (),
            "jobs.auditScrub.enabled=true",
            f"jobs.auditScrub.publicKey={key}",
            "secrets.auditorTokenSecret=auditor",
        )
    )
    container = _of_kind(objects, "CronJob")["audit-scrub"]["spec"]["jobTemplate"]["spec"][
        "template"
    ]["spec"]["containers"][0]
    assert container["args"] == ["audit", "verify", "--public-key", key]
    (token,) = [item for item in container["env"] if item["name"] == "HEALTHBANK_AUDIT_TOKEN"]
    assert token["valueFrom"]["secretKeyRef"] == {"name": "auditor", "key": "auditor-token"}
    # Audit's NetworkPolicy lets the job in, and nothing else changes in the graph.
    graph, _ = _network_graph(objects)
    assert graph["audit"] == authorized_call_graph()["audit"] | {"audit-scrub"}
    assert {k: v for k, v in graph.items() if k != "audit"} == {
        k: v for k, v in authorized_call_graph().items() if k != "audit"
    }


# --- settings: what the chart sets is what the code reads ---


def _cli_environment_variables() -> set[str]:
    """HEALTHBANK_* variables the CLI reads itself (argument defaults)."""
    source = (REPO / "libs" / "healthbank" / "cli.py").read_text()
    return set(re.findall(r'os\.environ\.get\("(HEALTHBANK_[A-Z_]+)"', source))


def test_every_variable_the_chart_sets_is_a_known_setting(objects: list[dict[str, Any]]) -> None:
    from opentelemetry.sdk import environment_variables as otel_sdk_variables

    known = {env_name(field) for field in Settings.model_fields} | _cli_environment_variables()
    # The OpenTelemetry SDK reads its own (the trace sampler's).
    known |= {v for k, v in vars(otel_sdk_variables).items() if k.startswith("OTEL_")}
    seen: set[str] = set()
    for config in _settings_config_maps(objects).values():
        seen |= set(config["data"])
    for _, pod in pod_specs(objects):
        seen |= {item["name"] for item in pod["containers"][0].get("env", [])}
    assert seen, "the chart sets no variable"
    assert seen <= known, sorted(seen - known)


def test_prod_values_use_cassandra_rf3_local_quorum_vault_and_mtls(
    rendered: dict[str, str],
) -> None:
    config = _of_kind(documents(rendered["prod"]), "ConfigMap")["audit"]["data"]
    assert config[env_name("storage_backend")] == "cassandra"
    assert config[env_name("cassandra_replication_factor")] == "3"
    assert config[env_name("cassandra_consistency")] == "LOCAL_QUORUM"
    assert config[env_name("key_provider")] == "vault"
    assert config[env_name("vault_auth_method")] == "kubernetes"
    assert config[env_name("dev_tokens")] == "false"
    assert config[env_name("tls_ca_file")] == "/etc/healthbank/tls/ca.crt"


def test_the_rendered_settings_load(rendered: dict[str, str]) -> None:
    from healthbank.core.config import load_settings

    for value_set, manifest in rendered.items():
        for component, config in _settings_config_maps(documents(manifest)).items():
            settings = load_settings(config["data"])
            if component in SERVICE_NAMES:
                assert settings.listen_port(component) == settings.port, (value_set, component)


def test_tls_material_comes_from_each_services_own_secret(rendered: dict[str, str]) -> None:
    for component, deployment in _services_of_kind(
        documents(rendered["prod"]), "Deployment"
    ).items():
        volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
        assert volumes["tls"]["secret"]["secretName"] == f"hb-healthbank-{component}-tls"


# --- the call graph and the Vault roles ---


def _network_graph(objects: list[dict[str, Any]]) -> tuple[dict[str, set[str]], set[str]]:
    graph: dict[str, set[str]] = {}
    external: set[str] = set()
    for component, policy in _of_kind(objects, "NetworkPolicy").items():
        callers: set[str] = set()
        for rule in policy["spec"].get("ingress") or []:
            for peer in rule["from"]:
                if "podSelector" in peer and "namespaceSelector" not in peer:
                    callers.add(peer["podSelector"]["matchLabels"][_COMPONENT])
                else:
                    external.add(component)
        graph[component] = callers
    return graph, external


def test_network_policies_admit_exactly_the_authorized_call_graph(
    rendered: dict[str, str],
) -> None:
    for value_set in ("default", "prod"):
        graph, external = _network_graph(documents(rendered[value_set]))
        assert graph == authorized_call_graph(), value_set
        assert external == externally_called(), value_set


def test_every_service_account_maps_to_its_own_vault_role(rendered: dict[str, str]) -> None:
    objects = documents(rendered["prod"])
    accounts = _of_kind(objects, "ServiceAccount")
    configs = _of_kind(objects, "ConfigMap")
    roles = {}
    for component, deployment in _services_of_kind(objects, "Deployment").items():
        account = accounts[component]
        assert (
            deployment["spec"]["template"]["spec"]["serviceAccountName"]
            == (account["metadata"]["name"])
        )
        role = account["metadata"]["annotations"]["healthbank.io/vault-role"]
        assert configs[component]["data"][env_name("vault_k8s_role")] == role
        assert account["automountServiceAccountToken"] is True  # Kubernetes auth needs it
        roles[component] = role
    assert roles == {name: f"healthbank-{name}" for name in SERVICE_NAMES}


# --- what the README's SRE section says ---


def test_a_changed_setting_rolls_the_pods(helm: Path) -> None:
    def checksum(*sets: str) -> str:
        deployment = _of_kind(documents(render(helm, (), *sets)), "Deployment")["audit"]
        return str(deployment["spec"]["template"]["metadata"]["annotations"]["checksum/settings"])

    assert checksum() == checksum()
    assert checksum() != checksum("logLevel=DEBUG")


def test_prod_archive_keeps_its_objects_on_the_claim(rendered: dict[str, str]) -> None:
    archive = _of_kind(documents(rendered["prod"]), "Deployment")["archive"]
    pod = archive["spec"]["template"]["spec"]
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"] == {"claimName": "healthbank-archive"}
    mounts = {mount["name"]: mount["mountPath"] for mount in pod["containers"][0]["volumeMounts"]}
    assert mounts["data"] == "/var/lib/healthbank"
    config = _of_kind(documents(rendered["prod"]), "ConfigMap")["archive"]["data"]
    assert config[env_name("data_dir")] == "/var/lib/healthbank"
    assert archive["spec"]["replicas"] == 1


def test_readme_names_the_transit_keys_and_metrics_the_code_uses() -> None:
    from healthbank.core.telemetry import BusinessMetrics
    from healthbank.crypto import vault

    readme = (REPO / "README.md").read_text()
    for key in (vault.DATA_KEY_NAME, vault.PSEUDONYM_KEY_NAME, vault.SIGNING_KEY_NAME):
        assert f"`{key}`" in readme
    for field in BusinessMetrics.__dataclass_fields__:
        assert f"`healthbank.{field.replace('_', '.', 1)}`" in readme, field


# --- dashboard, alert rules, collector ---


def _prometheus_names() -> set[str]:
    """The Prometheus series the services' metrics become behind the Collector's exporter."""
    from healthbank.core.telemetry import BusinessMetrics

    counters = {f"healthbank_{field}_total" for field in BusinessMetrics.__dataclass_fields__}
    duration = "rpc_server_duration_milliseconds"
    return {
        *counters,
        *(f"{duration}_{suffix}" for suffix in ("bucket", "count", "sum")),
        "process_cpu_time_seconds_total",
        "process_memory_max_rss_bytes",
    }


def test_dashboard_and_alerts_use_only_metrics_the_services_export(
    rendered: dict[str, str],
) -> None:
    configs = {
        obj["metadata"]["name"]: obj["data"]
        for obj in documents(rendered["default"])
        if obj["kind"] == "ConfigMap"
    }
    dashboard = json.loads(configs["hb-healthbank-dashboard"]["healthbank.json"])
    alerts = yaml.safe_load(configs["hb-healthbank-alerts"]["healthbank-alerts.yaml"])
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    expressions += [rule["expr"] for group in alerts["groups"] for rule in group["rules"]]
    used = {
        name
        for expression in expressions
        for name in re.findall(r"\b([a-z_]+_(?:total|bucket|count|sum|bytes))\b", expression)
    }
    assert used and used <= _prometheus_names(), sorted(used - _prometheus_names())
    # Every business counter is on the dashboard and behind at least one alert.
    business = {name for name in _prometheus_names() if name.startswith("healthbank_")}
    on_dashboard = " ".join(target["expr"] for p in dashboard["panels"] for target in p["targets"])
    assert all(name in on_dashboard for name in business)
    alerted = " ".join(rule["expr"] for group in alerts["groups"] for rule in group["rules"])
    assert all(name in alerted for name in business)


def test_dev_services_export_to_the_releases_collector(rendered: dict[str, str]) -> None:
    objects = documents(rendered["dev"])
    (collector,) = [
        o for o in objects if o["kind"] == "Service" and "otel" in o["metadata"]["name"]
    ]
    endpoint = f"{collector['metadata']['name']}:4317"
    for config in _settings_config_maps(objects).values():
        assert config["data"][env_name("otlp_endpoint")] == endpoint


@pytest.mark.parametrize(("value_set", "ratio"), [("dev", 1.0), ("prod", 0.1)])
def test_services_that_export_sample_new_traces_at_the_values_ratio(
    rendered: dict[str, str], value_set: str, ratio: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    configs = _settings_config_maps(documents(rendered[value_set]))
    assert set(SERVICE_NAMES) <= set(configs)
    for config in configs.values():
        data = config["data"]
        assert data[env_name("otlp_endpoint")]
        # What the SDK makes of the variables the chart sets, as a service's provider does.
        monkeypatch.setenv("OTEL_TRACES_SAMPLER", data["OTEL_TRACES_SAMPLER"])
        monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", data["OTEL_TRACES_SAMPLER_ARG"])
        sampler = TracerProvider().sampler
        expected = ParentBased(TraceIdRatioBased(ratio))
        assert sampler.get_description() == expected.get_description()


def test_every_service_gets_the_per_caller_rate_limits(rendered: dict[str, str]) -> None:
    from healthbank.core.config import load_settings
    from healthbank.rpc.rate_limit import CallerRates, Rate, rates_of

    for value_set, manifest in rendered.items():
        configs = _of_kind(documents(manifest), "ConfigMap")
        for service in SERVICE_NAMES:
            rates = rates_of(load_settings(configs[service]["data"]))
            assert rates == CallerRates(Rate(200, 400), Rate(20, 40)), (value_set, service)


def test_schema_migrate_runs_as_a_hook_before_install_and_upgrade_on_cassandra(
    rendered: dict[str, str],
) -> None:
    for value_set, manifest in rendered.items():
        objects = documents(manifest)
        jobs = _of_kind(objects, "Job")
        config = _of_kind(objects, "ConfigMap").get("schema-migrate")
        backend = _of_kind(objects, "ConfigMap")["audit"]["data"][env_name("storage_backend")]
        if backend != "cassandra":
            assert "schema-migrate" not in jobs and config is None, value_set
            continue
        job = jobs["schema-migrate"]
        hook = job["metadata"]["annotations"]
        assert hook["helm.sh/hook"] == "pre-install,pre-upgrade", value_set
        # Its settings exist before it runs: a hook of its own, created first.
        assert config is not None, value_set
        assert config["metadata"]["annotations"]["helm.sh/hook"] == hook["helm.sh/hook"]
        assert int(config["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(
            hook["helm.sh/hook-weight"]
        )
        container = job["spec"]["template"]["spec"]["containers"][0]
        assert container["command"] == ["healthbank"] and container["args"] == ["migrate"]
        assert config["data"][env_name("storage_backend")] == "cassandra", value_set


def test_cassandra_repair_runs_on_every_node_in_turn_on_a_schedule_when_enabled(
    helm: Path, rendered: dict[str, str]
) -> None:
    # Off by default: it needs JMX credentials the operator provides.
    for manifest in rendered.values():
        assert "cassandra-repair" not in _of_kind(documents(manifest), "CronJob")
    prod = VALUE_SETS["prod"]
    sets = ("jobs.repair.enabled=true", "jobs.repair.jmxSecret=cassandra-jmx")
    objects = documents(render(helm, prod, *sets))
    job = _of_kind(objects, "CronJob")["cassandra-repair"]
    assert job["spec"]["concurrencyPolicy"] == "Forbid"
    pod = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    script = container["args"][0]
    nodes = yaml.safe_load(prod[0].read_text())["storage"]["cassandra"]["contactPoints"]
    assert script.split("for node in ", 1)[1].split(";", 1)[0].split() == nodes
    # Each node repairs its primary ranges: one pass over the nodes covers the ring once.
    assert "repair --full -pr" in script and "-pwf /etc/cassandra-jmx/password-file" in script
    assert pod["volumes"][0]["secret"]["secretName"] == "cassandra-jmx"
    # The password never appears in the job's arguments or environment.
    assert "-pw " not in script
