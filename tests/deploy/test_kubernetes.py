"""deploy/kubernetes/base: valid against the Kubernetes API schemas, a complete kustomize base, and wired
like docker-compose.yml (same images, commands, variable names, volumes and health checks).

No cluster runs here: the schemas are those kubernetes-validate ships, and `kubectl kustomize` renders offline.
"""

import json
import re
import shutil
import subprocess
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

from tests.utils.deploy import COMPOSE_FILE, DEPLOY, REPO

BASE = DEPLOY / "kubernetes" / "base"
KUSTOMIZATION_FILE = BASE / "kustomization.yaml"
UI_SCRIPT = REPO / "src" / "doodle" / "ui" / "static" / "app.js"

# Every Kubernetes minor release whose schemas kubernetes-validate bundles (1.25 to 1.37).
KUBERNETES_VERSIONS = [f"1.{minor}" for minor in range(25, 38)]
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "Job"}
AUTOSCALED = {"fastapi-backend", "model-server"}
# Variables only the manifests set: PostgreSQL's data folder inside the volume, and the password that
# DATABASE_URL takes through $(POSTGRES_PASSWORD), where docker-compose.yml substitutes it in place.
KUBERNETES_ONLY_ENV = {
    "postgres": {"PGDATA"},
    "pipeline-viewer": {"POSTGRES_PASSWORD"},
    "pipeline-watcher": {"POSTGRES_PASSWORD"},
}
# Liveness probes that ask nothing of other services: the backend's /health asks the model server and the
# viewer's asks the run store (as does its /metrics), and an outage there is no reason to restart them.
OWN_LIVENESS = {"fastapi-backend": ("http", "/metrics", 8000), "pipeline-viewer": ("tcp", 8001)}
QUANTITY_UNITS = {"m": 1e-3, "": 1, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}


def load_yaml_documents(text: str) -> list[dict]:
    return [document for document in yaml.safe_load_all(text) if document]


@pytest.fixture(scope="module")
def kustomization() -> dict:
    return yaml.safe_load(KUSTOMIZATION_FILE.read_text())


@pytest.fixture(scope="module")
def manifests(kustomization) -> list[dict]:
    """Every resource of the files kustomization.yaml lists, as written."""
    return [
        document for name in kustomization["resources"] for document in load_yaml_documents((BASE / name).read_text())
    ]


@pytest.fixture(scope="module")
def compose_services() -> dict[str, dict]:
    return yaml.safe_load(COMPOSE_FILE.read_text())["services"]


def of_kind(manifests: list[dict], *kinds: str) -> dict[str, dict]:
    return {manifest["metadata"]["name"]: manifest for manifest in manifests if manifest["kind"] in kinds}


def workloads(manifests: list[dict]) -> dict[str, dict]:
    return of_kind(manifests, *WORKLOAD_KINDS)


def pod_spec(workload: dict) -> dict:
    return workload["spec"]["template"]["spec"]


def all_containers(workload: dict) -> list[dict]:
    spec = pod_spec(workload)
    return spec.get("initContainers", []) + spec["containers"]


def main_container(workload: dict) -> dict:
    """The container named like its workload: the service itself."""
    (container,) = [c for c in pod_spec(workload)["containers"] if c["name"] == workload["metadata"]["name"]]
    return container


def env_names(container: dict) -> list[str]:
    return [variable["name"] for variable in container.get("env", [])]


def dict_env(container: dict) -> dict[str, str]:
    return {variable["name"]: variable["value"] for variable in container.get("env", []) if "value" in variable}


def port_number(container: dict, port: int | str) -> int:
    """A probe's or Service's port, given by number or by the container port's name."""
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in container.get("ports", []) if p.get("name") == port]
    return number


def quantity(value: int | str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)([a-zA-Z]*)", str(value)).groups()
    return float(number) * QUANTITY_UNITS[unit]


def claim_mounts(workload: dict, container: dict) -> dict[str, tuple[str, bool]]:
    """mountPath -> (claim name, read-only) for the container's persistent volumes."""
    claims = {
        volume["name"]: volume["persistentVolumeClaim"]["claimName"]
        for volume in pod_spec(workload).get("volumes", [])
        if "persistentVolumeClaim" in volume
    }
    claims |= {template["metadata"]["name"]: template["metadata"]["name"] for template in claim_templates(workload)}
    return {
        mount["mountPath"]: (claims[mount["name"]], mount.get("readOnly", False))
        for mount in container.get("volumeMounts", [])
        if mount["name"] in claims
    }


def claim_templates(workload: dict) -> list[dict]:
    return workload["spec"].get("volumeClaimTemplates", [])


def compose_claim_mounts(service: dict) -> dict[str, tuple[str, bool]]:
    """target -> (named volume, read-only) of a docker-compose.yml service's short-syntax volumes."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target, *mode = volume.split(":")
        if not source.startswith((".", "/")):
            mounts[target] = (source, mode == ["ro"])
    return mounts


def compose_command(service: dict) -> list[str]:
    """The service's command with each `${VARIABLE:-default}` at its default."""
    return [re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", word) for word in service["command"]]


def routed_service(routes: dict[str, list[tuple[str, str, str]]], host: str, request_path: str) -> str | None:
    """The Service an Ingress sends host + request_path to: Exact paths match whole, Prefix paths per element."""
    for path, path_type, service in routes.get(host, []):
        under_prefix = request_path.rstrip("/") == path or request_path.startswith(path.rstrip("/") + "/")
        if request_path == path or (path_type == "Prefix" and under_prefix):
            return service
    return None


def probe_action(container: dict, probe: dict) -> tuple:
    """What a probe does: ("http", path, port), ("tcp", port) or ("exec", *command)."""
    if "httpGet" in probe:
        return ("http", probe["httpGet"]["path"], port_number(container, probe["httpGet"]["port"]))
    if "tcpSocket" in probe:
        return ("tcp", port_number(container, probe["tcpSocket"]["port"]))
    return ("exec", *probe["exec"]["command"])


def compose_health_action(test: list[str]) -> tuple:
    """A docker-compose.yml health check as the probe_action that does the same."""
    form, *command = test
    if form == "CMD-SHELL":
        return ("exec", "sh", "-c", command[0].replace("$$", "$"))
    if command[-1].startswith("http://"):  # python -c "urllib.request.urlopen(...)" URL
        url = urlsplit(command[-1])
        return ("http", url.path, url.port)
    return ("exec", *command)


def test_kustomization_lists_exactly_the_manifest_files(kustomization):
    listed = kustomization["resources"]
    assert len(listed) == len(set(listed)), "a file is listed twice"
    for name in listed:
        assert (BASE / name).is_file(), f"kustomization.yaml lists {name}, which does not exist"
    on_disk = {path.name for path in BASE.glob("*.y*ml")} - {KUSTOMIZATION_FILE.name}
    assert on_disk == set(listed), "every manifest file must be listed, and only those"


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_manifests_match_the_kubernetes_api_schemas(kustomization, version):
    """Strict: a misspelt or misplaced field fails as well as a wrong type."""
    failures = []
    for name in kustomization["resources"]:
        for manifest in load_yaml_documents((BASE / name).read_text()):
            where = f"{name}: {manifest.get('kind')}/{manifest.get('metadata', {}).get('name')}"
            try:
                kubernetes_validate.validate(manifest, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                failures.append(f"{where}: {'.'.join(map(str, error.path))}: {error.message}")
            except kubernetes_validate.SchemaNotFoundError as error:
                failures.append(f"{where}: {error.message}")
    assert not failures, "\n".join(failures)


@pytest.mark.integration
def test_kustomize_renders_a_valid_stack_with_the_generated_secret():
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not found: its built-in kustomize renders the base")
    done = subprocess.run([kubectl, "kustomize", str(BASE)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    rendered = load_yaml_documents(done.stdout)
    for manifest in rendered:
        kubernetes_validate.validate(manifest, KUBERNETES_VERSIONS[-1], strict=True)
    (secret,) = of_kind(rendered, "Secret").values()
    assert secret["metadata"]["name"].startswith("doodle-secrets-"), "kustomize appends the content hash"
    for workload in workloads(rendered).values():
        assert workload["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/part-of"] == "doodle"
        for container in all_containers(workload):
            for variable in container.get("env", []):
                reference = variable.get("valueFrom", {}).get("secretKeyRef")
                if reference:
                    assert reference["name"] == secret["metadata"]["name"], variable["name"]
                    assert reference["key"] in secret["data"], variable["name"]


def test_workloads_match_their_compose_services(manifests, compose_services, kustomization):
    """Same image, command and variable names as the service of the same name in docker-compose.yml."""
    found = workloads(manifests)
    assert set(found) == {
        "postgres",
        "mlflow",
        "bootstrap",
        "model-server",
        "fastapi-backend",
        "ui",
        "pipeline-viewer",
        "pipeline-watcher",
    }
    for name, workload in found.items():
        assert name in compose_services, f"{name} has no service in docker-compose.yml"
        service, container = compose_services[name], main_container(workload)
        assert container["image"] == service["image"], name
        if "command" in service:
            assert container["command"] + container.get("args", []) == compose_command(service), name
        names = env_names(container)
        assert len(names) == len(set(names)), f"{name} sets a variable twice"
        expected = set(service.get("environment", {})) | KUBERNETES_ONLY_ENV.get(name, set())
        assert set(names) == expected, name
    assert {image["name"] for image in kustomization["images"]} == {"doodle"}, "the image to push and set"


def test_probes_are_the_compose_health_checks(manifests, compose_services):
    """Startup, readiness and liveness probes run the service's health check, but for OWN_LIVENESS."""
    for name, workload in workloads(manifests).items():
        healthcheck = compose_services[name].get("healthcheck")
        if healthcheck is None:
            continue
        container = main_container(workload)
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            if kind in container:
                expected = compose_health_action(healthcheck["test"])
                if kind == "livenessProbe" and name in OWN_LIVENESS:
                    expected = OWN_LIVENESS[name]
                assert probe_action(container, container[kind]) == expected, f"{name} {kind}"


def test_every_long_running_container_has_probes(manifests):
    for name, workload in of_kind(manifests, "Deployment", "StatefulSet").items():
        for container in pod_spec(workload)["containers"]:
            assert "livenessProbe" in container, f"{name}/{container['name']} has no liveness probe"
            if container.get("ports"):
                assert "readinessProbe" in container, f"{name}/{container['name']} serves but has no readiness probe"


def test_every_container_has_requests_within_limits(manifests):
    for name, workload in workloads(manifests).items():
        for container in all_containers(workload):
            where = f"{name}/{container['name']}"
            resources = container.get("resources", {})
            for resource in ("cpu", "memory"):
                request = resources.get("requests", {}).get(resource)
                limit = resources.get("limits", {}).get(resource)
                assert request is not None and limit is not None, f"{where}: {resource} request and limit"
                assert quantity(request) <= quantity(limit), f"{where}: {resource} request above its limit"


def test_pods_run_as_the_image_user_without_service_links(manifests):
    """Service links would add <SERVICE>_PORT=tcp://... variables beside the ones the settings read."""
    for name, workload in workloads(manifests).items():
        spec = pod_spec(workload)
        assert spec.get("enableServiceLinks") is False, name
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        for container in all_containers(workload):
            assert container["securityContext"]["allowPrivilegeEscalation"] is False, name


def test_volumes_are_mounted_like_the_compose_volumes(manifests, compose_services):
    claims = set(of_kind(manifests, "PersistentVolumeClaim"))
    for name, workload in workloads(manifests).items():
        mounts = claim_mounts(workload, main_container(workload))
        assert mounts == compose_claim_mounts(compose_services[name]), name
        templates = {template["metadata"]["name"] for template in claim_templates(workload)}
        for claim, _ in mounts.values():
            assert claim in claims | templates, f"{name} mounts {claim}, which no manifest claims"


def test_drawings_are_shared_and_other_state_has_a_single_writer(manifests):
    claims = of_kind(manifests, "PersistentVolumeClaim")
    shared = {name for name, claim in claims.items() if claim["spec"]["accessModes"] == ["ReadWriteMany"]}
    assert shared == {"drawings", "pipeline-data"}, "mounted by pods that may run on different nodes"
    single_writer = {name for name, claim in claims.items() if claim["spec"]["accessModes"] == ["ReadWriteOnce"]}
    assert single_writer == {"mlflow-data"}
    for name, deployment in of_kind(manifests, "Deployment").items():
        mounted = {claim for claim, _ in claim_mounts(deployment, main_container(deployment)).values()}
        if mounted & single_writer:
            # A rolling update would start the new pod while the old one holds the volume.
            assert deployment["spec"]["replicas"] == 1, name
            assert deployment["spec"]["strategy"]["type"] == "Recreate", name


def test_backend_and_watcher_share_the_training_threshold(manifests):
    def threshold(name: str) -> str:
        (value,) = [
            e["value"]
            for e in main_container(of_kind(manifests, "Deployment")[name])["env"]
            if e["name"] == "MIN_NEW_IMAGES"
        ]
        return value

    assert threshold("fastapi-backend") == threshold("pipeline-watcher")


def test_pipeline_watcher_runs_exactly_one_pod(manifests):
    watcher = of_kind(manifests, "Deployment")["pipeline-watcher"]
    assert watcher["spec"]["replicas"] == 1
    assert watcher["spec"]["strategy"] == {"type": "Recreate"}
    targets = {hpa["spec"]["scaleTargetRef"]["name"] for hpa in of_kind(manifests, "HorizontalPodAutoscaler").values()}
    assert "pipeline-watcher" not in targets


def test_autoscalers_scale_deployments_on_cpu(manifests):
    deployments = of_kind(manifests, "Deployment")
    autoscalers = of_kind(manifests, "HorizontalPodAutoscaler")
    targets = {}
    for name, autoscaler in autoscalers.items():
        assert autoscaler["apiVersion"] == "autoscaling/v2", name
        spec = autoscaler["spec"]
        target = spec["scaleTargetRef"]
        assert (target["apiVersion"], target["kind"]) == ("apps/v1", "Deployment"), name
        assert target["name"] in deployments, f"{name} scales {target['name']}, which does not exist"
        assert 1 <= spec["minReplicas"] <= spec["maxReplicas"], name
        (metric,) = spec["metrics"]
        assert metric["resource"]["name"] == "cpu" and metric["resource"]["target"]["type"] == "Utilization", name
        deployment = deployments[target["name"]]
        assert "replicas" not in deployment["spec"], f"{target['name']}: each apply would reset the autoscaler"
        for container in pod_spec(deployment)["containers"]:
            assert "cpu" in container["resources"]["requests"], f"{target['name']}: utilisation needs a CPU request"
        targets[target["name"]] = spec
    assert set(targets) == AUTOSCALED
    # Each backend pod keeps one prediction connection: more model servers than backends would idle.
    assert targets["model-server"]["maxReplicas"] <= targets["fastapi-backend"]["maxReplicas"]


def test_services_select_a_workload_and_its_ports(manifests):
    found = workloads(manifests)
    for name, service in of_kind(manifests, "Service").items():
        selected = [
            workload
            for workload in found.values()
            if service["spec"]["selector"].items() <= workload["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(selected) == 1, f"Service {name} selects {len(selected)} workloads"
        container = main_container(selected[0])
        for port in service["spec"]["ports"]:
            assert port_number(container, port["targetPort"]) == port["port"], f"Service {name}: {port}"


def test_in_cluster_addresses_name_a_service_port(manifests):
    """http://mlflow:5000, http://model-server:5002/..., postgresql+psycopg://...@postgres:5432/..."""
    services = of_kind(manifests, "Service")
    checked = set()
    for name, workload in workloads(manifests).items():
        for container in all_containers(workload):
            for variable in container.get("env", []):
                if not re.match(r"[a-z][\w+.-]*://", variable.get("value", "")):
                    continue  # not an address (CORS_ORIGINS is a JSON list of them)
                address = urlsplit(variable["value"].replace("$(POSTGRES_PASSWORD)", "password"))
                if "." in address.hostname:
                    continue  # outside the cluster, as the browser sees it
                where = f"{name}: {variable['name']}"
                assert address.hostname in services, f"{where}: no Service {address.hostname}"
                assert address.port in {p["port"] for p in services[address.hostname]["spec"]["ports"]}, where
                checked.add(address.hostname)
    assert checked == {"mlflow", "model-server", "postgres"}


def test_dependent_variables_are_defined_before_use(manifests):
    """Kubernetes leaves $(NAME) as it is when NAME is not set earlier in the same container."""
    for name, workload in workloads(manifests).items():
        for container in all_containers(workload):
            defined = []
            for variable in container.get("env", []):
                for used in re.findall(r"\$\((\w+)\)", variable.get("value", "")):
                    assert used in defined, f"{name}: {variable['name']} uses {used} before it is set"
                defined.append(variable["name"])


def test_secrets_come_from_the_generator_with_no_value_committed(manifests, kustomization):
    generated = {
        generator["name"]: dict(literal.split("=", 1) for literal in generator["literals"])
        for generator in kustomization["secretGenerator"]
    }
    assert all(value == "" for values in generated.values() for value in values.values()), "set secrets in an overlay"
    assert not of_kind(manifests, "Secret"), "secrets come from the generator alone"
    used = set()
    for name, workload in workloads(manifests).items():
        for container in all_containers(workload):
            for variable in container.get("env", []):
                reference = variable.get("valueFrom", {}).get("secretKeyRef")
                if reference:
                    assert reference["key"] in generated.get(reference["name"], {}), f"{name}: {reference}"
                    used.add(reference["key"])
    assert used == {"POSTGRES_PASSWORD", "API_TOKEN"}


def test_ingress_serves_the_ui_and_the_backend_paths_it_calls(manifests):
    (ingress,) = of_kind(manifests, "Ingress").values()
    services = of_kind(manifests, "Service")
    routes = {}  # host -> [(path, pathType, service)]
    for rule in ingress["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            backend = path["backend"]["service"]
            ports = {p["name"] for p in services[backend["name"]]["spec"]["ports"]}
            assert backend["port"]["name"] in ports, f"{rule['host']}{path['path']}"
            routes.setdefault(rule["host"], []).append((path["path"], path["pathType"], backend["name"]))

    found = workloads(manifests)
    backend_url = urlsplit(dict_env(main_container(found["ui"]))["UI_BACKEND_URL"])
    ui_calls = re.findall(r'call\("(/[^"]*)"', UI_SCRIPT.read_text())
    assert ui_calls, "the UI's backend calls were not found"
    for call in ui_calls:
        assert routed_service(routes, backend_url.hostname, call) == "fastapi-backend", call
    assert routed_service(routes, backend_url.hostname, "/metrics") is None, "metrics stay inside the cluster"
    (ui_host,) = [host for host in routes if routed_service(routes, host, "/") == "ui"]
    cors_origins = json.loads(dict_env(main_container(found["fastapi-backend"]))["CORS_ORIGINS"])
    assert f"{backend_url.scheme}://{ui_host}" in cors_origins
