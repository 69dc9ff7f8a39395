"""`healthbank cluster status`: rollout and health of each service of a release, as a table.

The Kubernetes API gives, per Deployment, what was asked (spec, generation) and what runs
(status, conditions), and per pod whether its readiness probe (grpc.health.v1 in this
chart) passes. :func:`service_statuses` turns the two lists into one row per service with
the same rollout rules as ``kubectl rollout status``; it takes the ``kubernetes`` client's
models, so it is tested with API responses deserialized by that client, without a cluster.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# The chart's labels (charts/healthbank/templates/_helpers.tpl).
NAME_LABEL = "app.kubernetes.io/name"
INSTANCE_LABEL = "app.kubernetes.io/instance"
COMPONENT_LABEL = "app.kubernetes.io/component"


class ClusterUnreachable(Exception):
    """No kubeconfig and not in a pod, or the API server refused or did not answer."""


@dataclass(frozen=True)
class ServiceStatus:
    """One service of a release: its rollout and how many replicas answer their probes."""

    service: str
    desired: int
    updated: int
    ready: int
    available: int
    rollout: str
    health: str
    pods_not_ready: tuple[str, ...]

    def row(self) -> tuple[str, str, str, str, str]:
        """(service, ready/desired, updated, rollout, health) for the table."""
        return (
            self.service,
            f"{self.ready}/{self.desired}",
            str(self.updated),
            self.rollout,
            self.health,
        )


def label_selector(release: str | None) -> str:
    """The selector of the chart's objects, of one release or of all."""
    selector = f"{NAME_LABEL}=healthbank"
    return f"{selector},{INSTANCE_LABEL}={release}" if release else selector


def rollout_state(deployment: Any) -> str:
    """``kubectl rollout status``'s verdict on one V1Deployment, in a few words."""
    spec, status, metadata = deployment.spec, deployment.status, deployment.metadata
    desired = spec.replicas if spec.replicas is not None else 1
    updated = status.updated_replicas or 0
    available = status.available_replicas or 0
    total = status.replicas or 0
    if (status.observed_generation or 0) < (metadata.generation or 0):
        return "waiting for the controller"
    for condition in status.conditions or ():
        if condition.type == "Progressing" and condition.reason == "ProgressDeadlineExceeded":
            return "stalled (progress deadline exceeded)"
    if updated < desired:
        return f"rolling out ({updated}/{desired} updated)"
    if total > updated:
        return f"rolling out ({total - updated} old terminating)"
    if available < updated:
        return f"rolling out ({available}/{updated} available)"
    return "complete"


def _pod_ready(pod: Any) -> bool:
    return any(
        condition.type == "Ready" and condition.status == "True"
        for condition in (pod.status.conditions or ())
    )


def service_statuses(deployments: Sequence[Any], pods: Sequence[Any]) -> list[ServiceStatus]:
    """One :class:`ServiceStatus` per Deployment (V1Deployment, V1Pod models), by service."""
    statuses = []
    for deployment in deployments:
        labels = deployment.metadata.labels or {}
        service = labels.get(COMPONENT_LABEL, deployment.metadata.name)
        mine = [
            pod
            for pod in pods
            if (pod.metadata.labels or {}).get(COMPONENT_LABEL) == service
            and (pod.metadata.labels or {}).get(INSTANCE_LABEL) == labels.get(INSTANCE_LABEL)
        ]
        desired = deployment.spec.replicas if deployment.spec.replicas is not None else 1
        ready = sum(1 for pod in mine if _pod_ready(pod))
        if desired == 0:
            health = "SCALED TO ZERO"
        elif ready >= desired:
            health = "SERVING"
        elif ready > 0:
            health = "DEGRADED"
        else:
            health = "DOWN"
        statuses.append(
            ServiceStatus(
                service=service,
                desired=desired,
                updated=deployment.status.updated_replicas or 0,
                ready=ready,
                available=deployment.status.available_replicas or 0,
                rollout=rollout_state(deployment),
                health=health,
                pods_not_ready=tuple(
                    sorted(pod.metadata.name for pod in mine if not _pod_ready(pod))
                ),
            )
        )
    return sorted(statuses, key=lambda status: status.service)


def fetch_statuses(namespace: str, release: str | None) -> list[ServiceStatus]:
    """Read the release's Deployments and pods with the ``kubernetes`` client (kubeconfig or,
    inside a pod, the service account) and return their statuses."""
    from kubernetes import client, config  # type: ignore[import-untyped, unused-ignore]
    from urllib3.exceptions import HTTPError

    try:
        config.load_kube_config()
    except config.ConfigException:
        try:
            config.load_incluster_config()
        except config.ConfigException:
            raise ClusterUnreachable("no kubeconfig, and not running in a pod") from None
    selector = label_selector(release)
    try:
        deployments = client.AppsV1Api().list_namespaced_deployment(
            namespace, label_selector=selector
        )
        pods = client.CoreV1Api().list_namespaced_pod(namespace, label_selector=selector)
    except client.ApiException as error:
        raise ClusterUnreachable(f"the API server answered {error.status} {error.reason}") from None
    except HTTPError as error:
        unreachable = f"the API server is unreachable ({type(error).__name__})"
        raise ClusterUnreachable(unreachable) from None
    return service_statuses(deployments.items, pods.items)
