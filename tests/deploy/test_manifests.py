"""Deployment: the Kustomize manifests, the trainer image and cloudbuild.yaml, checked offline.

Every kustomization is rendered with `kubectl kustomize` and validated with
`kubernetes-validate --strict`; the properties a platform review asks for are asserted on the
rendered objects. The multi-node Job's environment is fed to the trainer's own TF_CONFIG builder,
and the readiness probe is sent, as the kubelet sends it, to the local TF-Serving-compatible
server before and after its model appears.
"""

import dataclasses
import functools
import json
import pathlib
import re
import shutil
import subprocess
import time
import urllib.request

import grpc
import numpy as np
import pytest
import yaml
from google.protobuf import text_format
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families
from tensorflow_serving.apis import prediction_service_pb2_grpc
from tensorflow_serving.config import model_server_config_pb2

from serving.dev_server import cli, config_files, model_config
from serving.dev_server.batching import BatchingOptions
from serving.dev_server.server import ModelServer
from tests import REPO, serving_fixtures
from trainer import distribution

K8S = REPO / "k8s"
VENV_BIN = REPO / ".venv" / "bin"
SERVING = {"base": "base", "cpu": "overlays/cpu", "gpu": "overlays/gpu"}
TRAINING = {"single-node": "training/single-node", "multi-node": "training/multi-node"}
KUSTOMIZATIONS = {**SERVING, **TRAINING}
# The newest Kubernetes kubernetes-validate knows, and the oldest GKE minor still supported.
KUBERNETES_VERSIONS = ("1.37.0", "1.33.0")
SERVING_LABELS = {"app.kubernetes.io/name": "objrec", "app.kubernetes.io/component": "serving"}
GRPC_PORT, REST_PORT = 8500, 8501
EXIT_PREEMPTED, EXIT_USAGE = 42, 2


# Rendering ---------------------------------------------------------------------------------


def kustomize(directory: pathlib.Path) -> list[dict]:
    """`kubectl kustomize DIRECTORY` as objects."""
    if shutil.which("kubectl") is None:
        pytest.fail("kubectl is not on PATH: install it (scripts/install_kubectl.sh)")
    result = subprocess.run(
        ["kubectl", "kustomize", str(directory)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return [item for item in yaml.safe_load_all(result.stdout) if item]


@functools.cache
def rendered(name: str) -> tuple[dict, ...]:
    """One of this repository's kustomizations, rendered once per session."""
    return tuple(kustomize(K8S / KUSTOMIZATIONS[name]))


def find(objects, kind: str, name: str | None = None) -> dict:
    matches = [o for o in objects if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    assert len(matches) == 1, f"{len(matches)} {kind} named {name}"
    return matches[0]


def find_all(objects, kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


def configmap_file(objects, prefix: str, key: str) -> str:
    """A file of a generated (hash-suffixed) ConfigMap."""
    [configmap] = [
        o
        for o in find_all(objects, "ConfigMap")
        if re.fullmatch(rf"{prefix}-[a-z0-9]{{10}}", o["metadata"]["name"])
    ]
    return configmap["data"][key]


def pod_spec(workload: dict) -> dict:
    return workload["spec"]["template"]["spec"]


def container(workload: dict, name: str) -> dict:
    [match] = [c for c in pod_spec(workload)["containers"] if c["name"] == name]
    return match


def workloads(objects) -> list[dict]:
    return [o for o in objects if o["kind"] in ("Deployment", "Job")]


def selects(selector: dict, labels: dict) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def copy_k8s(tmp_path: pathlib.Path) -> pathlib.Path:
    """A scratch copy of k8s/, to edit as cloudbuild.yaml edits its checkout."""
    return pathlib.Path(shutil.copytree(K8S, tmp_path / "k8s"))


def write_params(path: pathlib.Path, params: dict) -> None:
    path.write_text("".join(f"{key}={value}\n" for key, value in params.items()))


def read_params(path: pathlib.Path) -> dict:
    lines = [line for line in path.read_text().splitlines() if line and line[0] != "#"]
    return dict(line.split("=", 1) for line in lines)


# Validation against the Kubernetes API schemas --------------------------------------------------


def kubernetes_validate(paths, version: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(VENV_BIN / "kubernetes-validate"), "--strict", "--quiet", "-k", version, *paths],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_rendered_object_passes_strict_schema_validation(tmp_path, version):
    paths = []
    for name in KUSTOMIZATIONS:
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump_all(rendered(name)))
        paths.append(str(path))
    result = kubernetes_validate(paths, version)
    # --quiet prints warnings and failures only; a warning (an unknown kind) fails too.
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_schema_validation_reports_a_custom_resource_as_a_warning():
    """The check above catches a kind without a schema: kubernetes-validate only warns."""
    result = kubernetes_validate([str(K8S / "extras" / "gmp-podmonitoring.yaml")], "1.37.0")
    assert result.returncode == 0
    assert result.stdout.startswith("WARN"), result.stdout


# TF Serving ------------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", SERVING)
def test_serving_probes_use_the_grpc_health_service(overlay):
    deployment = find(rendered(overlay), "Deployment", "objrec-serving")
    serving = container(deployment, "tf-serving")
    ports = {port["name"]: port["containerPort"] for port in serving["ports"]}
    assert ports == {"grpc": GRPC_PORT, "http": REST_PORT}
    assert "--enable_grpc_healthcheck_service=true" in serving["args"]
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        probe = serving[kind]
        assert set(probe) & {"grpc", "tcpSocket", "httpGet", "exec"} == {"grpc"}, kind
        assert probe["grpc"]["port"] == GRPC_PORT
    startup, readiness = serving["startupProbe"], serving["readinessProbe"]
    # A slow load (model from Cloud Storage, warmup) gets at least 10 minutes.
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600
    assert readiness["periodSeconds"] * readiness["failureThreshold"] <= 15
    liveness = serving["livenessProbe"]
    assert liveness["periodSeconds"] * liveness["failureThreshold"] >= 60


@pytest.mark.parametrize("overlay", SERVING)
def test_serving_runs_official_tf_serving_configured_by_configmaps(overlay):
    objects = rendered(overlay)
    serving = container(find(objects, "Deployment", "objrec-serving"), "tf-serving")
    tensorflow = re.search(r"^tensorflow==(\S+)$", (REPO / "requirements.txt").read_text(), re.M)
    suffix = "-gpu" if overlay == "gpu" else ""
    assert serving["image"] == f"tensorflow/serving:{tensorflow.group(1)}{suffix}"
    assert serving["command"] == ["/usr/bin/tensorflow_model_server"]
    flags = dict(arg.removeprefix("--").split("=", 1) for arg in serving["args"])
    assert flags["port"] == str(GRPC_PORT) and flags["rest_api_port"] == str(REST_PORT)
    assert flags["enable_batching"] == "true" and flags["enable_model_warmup"] == "true"
    [mount] = [m for m in serving["volumeMounts"] if m["mountPath"] == "/etc/tf-serving"]
    [volume] = [
        v for v in pod_spec(find(objects, "Deployment"))["volumes"] if v["name"] == mount["name"]
    ]
    configmap = find(objects, "ConfigMap", volume["configMap"]["name"])
    for flag in ("model_config_file", "batching_parameters_file", "monitoring_config_file"):
        directory, file_name = flags[flag].rsplit("/", 1)
        assert directory == "/etc/tf-serving" and file_name in configmap["data"], flag


@pytest.mark.parametrize("overlay", SERVING)
def test_model_config_names_the_release_with_a_version_policy(overlay):
    objects = rendered(overlay)
    params = read_params(K8S / "base" / "params.env")
    text = configmap_file(objects, "objrec-serving-config", "models.config")
    config = text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
    [model] = config.model_config_list.config
    assert model.name == params["model_name"]
    assert model.base_path == params["model_base_path"]
    assert model.model_version_policy.WhichOneof("policy_choice") == "latest"
    model_config.validate(config)  # what TF Serving checks before loading (serving/)
    annotations = find(objects, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["objrec.dev/model-base-path"] == params["model_base_path"]


@pytest.mark.parametrize("overlay", SERVING)
def test_batching_and_monitoring_configs_parse_as_tf_serving_protos(overlay):
    objects = rendered(overlay)
    text = configmap_file(objects, "objrec-serving-config", "batching.config")
    batching = text_format.Parse(text, config_files.BatchingParameters())
    BatchingOptions.from_parameters(batching)  # what the local server accepts
    assert batching.max_batch_size.value >= 1 and batching.num_batch_threads.value >= 1
    sizes = list(batching.allowed_batch_sizes)
    if sizes:  # TF Serving: increasing, and the last one is max_batch_size
        assert sizes == sorted(set(sizes)) and sizes[-1] == batching.max_batch_size.value
    expected_max = 64 if overlay == "gpu" else 16
    assert batching.max_batch_size.value == expected_max
    text = configmap_file(objects, "objrec-serving-config", "monitoring.config")
    monitoring = text_format.Parse(text, config_files.MonitoringConfig())
    assert monitoring.prometheus_config.enable
    annotations = find(objects, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/path"] == monitoring.prometheus_config.path
    assert annotations["prometheus.io/port"] == str(REST_PORT)


@pytest.mark.parametrize("overlay", SERVING)
def test_serving_resources(overlay):
    deployment = find(rendered(overlay), "Deployment", "objrec-serving")
    resources = container(deployment, "tf-serving")["resources"]
    for name in ("cpu", "memory"):
        # Requests equal limits: Guaranteed QoS; the HPA needs the CPU request.
        assert resources["requests"][name] == resources["limits"][name], name
    spec = pod_spec(deployment)
    if overlay == "gpu":
        assert resources["limits"]["nvidia.com/gpu"] == resources["requests"]["nvidia.com/gpu"]
        assert int(resources["limits"]["nvidia.com/gpu"]) == 1
        assert "cloud.google.com/gke-accelerator" in spec["nodeSelector"]
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec[
            "tolerations"
        ]
    else:
        assert "nvidia.com/gpu" not in resources["limits"]
        assert "nodeSelector" not in spec


@pytest.mark.parametrize("overlay", SERVING)
def test_rolling_update_never_lowers_capacity(overlay):
    deployment = find(rendered(overlay), "Deployment", "objrec-serving")
    rolling = deployment["spec"]["strategy"]["rollingUpdate"]
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    assert rolling["maxUnavailable"] == 0 and rolling["maxSurge"] >= 1
    # The HPA owns the replica count; `kubectl apply` must not reset it.
    assert "replicas" not in deployment["spec"]
    assert selects(deployment["spec"]["selector"]["matchLabels"], SERVING_LABELS)


@pytest.mark.parametrize("overlay", SERVING)
def test_serving_returns_a_large_request_memory_after_answering(overlay):
    # objrec-serve sets the same (tests/dev_server/test_hostile.py measures the difference).
    serving = container(find(rendered(overlay), "Deployment", "objrec-serving"), "tf-serving")
    env = {item["name"]: item.get("value") for item in serving["env"]}
    assert env["TF_ONEDNN_USE_SYSTEM_ALLOCATOR"] == "1"


@pytest.mark.parametrize("overlay", SERVING)
def test_disruption_budget_never_blocks_a_drain(overlay):
    objects = rendered(overlay)
    budget = find(objects, "PodDisruptionBudget", "objrec-serving")["spec"]
    assert budget["maxUnavailable"] == 1 and "minAvailable" not in budget
    assert budget["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
    pod_labels = find(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert selects(budget["selector"]["matchLabels"], pod_labels)


@pytest.mark.parametrize("overlay", SERVING)
def test_autoscaler_scales_the_deployment_on_cpu(overlay):
    objects = rendered(overlay)
    autoscaler = find(objects, "HorizontalPodAutoscaler", "objrec-serving")["spec"]
    deployment = find(objects, "Deployment")
    target = autoscaler["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert 2 <= autoscaler["minReplicas"] <= autoscaler["maxReplicas"]
    [metric] = autoscaler["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert "cpu" in container(deployment, "tf-serving")["resources"]["requests"]


@pytest.mark.parametrize("overlay", SERVING)
def test_network_policy_admits_only_the_serving_ports(overlay):
    objects = rendered(overlay)
    policy = find(objects, "NetworkPolicy", "objrec-serving")["spec"]
    pod_labels = find(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert selects(policy["podSelector"]["matchLabels"], pod_labels)
    assert policy["policyTypes"] == ["Ingress"]
    assert policy["ingress"], "no rule: nothing admitted"
    for rule in policy["ingress"]:
        ports = {(port["protocol"], port["port"]) for port in rule["ports"]}
        assert ports == {("TCP", GRPC_PORT), ("TCP", REST_PORT)}


@pytest.mark.parametrize("overlay", SERVING)
def test_rest_service_and_headless_grpc_service(overlay):
    objects = rendered(overlay)
    pod_labels = find(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    rest = find(objects, "Service", "objrec-serving")["spec"]
    grpc_service = find(objects, "Service", "objrec-serving-grpc")["spec"]
    assert rest.get("clusterIP") != "None"
    assert [(p["port"], p["targetPort"]) for p in rest["ports"]] == [(REST_PORT, "http")]
    # Headless: DNS returns every pod, and round_robin clients spread their calls.
    assert grpc_service["clusterIP"] == "None"
    assert [(p["port"], p["targetPort"]) for p in grpc_service["ports"]] == [(GRPC_PORT, "grpc")]
    for service in (rest, grpc_service):
        assert selects(service["selector"], pod_labels)


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_pods_act_as_google_service_accounts_through_workload_identity(name):
    objects = rendered(name)
    for workload in workloads(objects):
        spec = pod_spec(workload)
        account = find(objects, "ServiceAccount", spec["serviceAccountName"])
        email = account["metadata"]["annotations"]["iam.gke.io/gcp-service-account"]
        assert re.fullmatch(r"[a-z][a-z0-9-]+@[a-z][a-z0-9-]+\.iam\.gserviceaccount\.com", email)
        assert spec["automountServiceAccountToken"] is False
        volumes = spec.get("volumes", [])
        assert not [v for v in volumes if "secret" in v], "no key files in pods"


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_pods_are_hardened(name):
    objects = rendered(name)
    namespace = find(objects, "Namespace", "objrec")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert workloads(objects)
    for workload in workloads(objects):
        spec = pod_spec(workload)
        pod = spec["securityContext"]
        # Above 10000: no user of the node's own (checkov's CKV_K8S_40).
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] >= 10000
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
        scratch = {v["name"] for v in spec["volumes"] if "emptyDir" in v}
        for each in spec["containers"]:
            security = each["securityContext"]
            assert security["allowPrivilegeEscalation"] is False
            assert security["readOnlyRootFilesystem"] is True
            assert security["capabilities"] == {"drop": ["ALL"]}
            assert security.get("privileged", False) is False
            mounts = {m["mountPath"]: m["name"] for m in each["volumeMounts"]}
            assert mounts["/tmp"] in scratch, "a writable /tmp on the read-only root"
            env = {item["name"]: item.get("value") for item in each.get("env", [])}
            assert env.get("HOME") == "/tmp", "a writable HOME on the read-only root"
            assert each["imagePullPolicy"] == "Always"
            assert "limits" in each["resources"] and "requests" in each["resources"]


# checkov's IDs this repository skips, each with its reason in the object's annotations: images
# named by tag or placeholder in k8s/, set by digest when cloudbuild.yaml releases them.
CHECKOV_SKIPS = {"CKV_K8S_14", "CKV_K8S_43"}


def checkov(directory: pathlib.Path) -> dict:
    """checkov's Kubernetes checks over every YAML file of `directory`: its JSON results."""
    binary = REPO / ".venv-checkov" / "bin" / "checkov"
    if not binary.exists():
        pytest.fail("checkov is not installed: run scripts/setup_env.sh")
    result = subprocess.run(
        [str(binary), "--directory", str(directory), "--framework", "kubernetes",
         "--skip-download", "--output", "json"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode in (0, 1), result.stderr[-2000:]
    return json.loads(result.stdout)["results"]


def render_to(directory: pathlib.Path, k8s: pathlib.Path, names) -> pathlib.Path:
    directory.mkdir()
    for name in names:
        text = subprocess.run(
            ["kubectl", "kustomize", str(k8s / KUSTOMIZATIONS[name])],
            capture_output=True, text=True, timeout=60, check=True,
        ).stdout  # fmt: skip
        (directory / f"{name}.yaml").write_text(text)
    return directory


def test_checkov_finds_no_policy_failure_and_every_skip_gives_its_reason(tmp_path):
    results = checkov(render_to(tmp_path / "rendered", K8S, KUSTOMIZATIONS))
    failed = [(c["check_id"], c["resource"], c["file_path"]) for c in results["failed_checks"]]
    assert failed == []
    assert len(results["passed_checks"]) > 400
    for check in results["skipped_checks"]:
        assert check["check_id"] in CHECKOV_SKIPS, check["check_id"]
        reason = check["check_result"]["suppress_comment"]
        assert "cloudbuild.yaml" in reason, f"{check['check_id']}: {reason!r}"


def test_a_release_runs_both_images_by_digest_without_a_skip(tmp_path):
    """The images as cloudbuild.yaml's set-trainer-image and set-serving-image set them: with
    the skips' annotations removed, checkov still finds no failure."""
    k8s = copy_k8s(tmp_path)
    digest = "sha256:" + "0123456789abcdef" * 4
    pinned = {
        "overlays/gpu": ("tensorflow/serving", f"tensorflow/serving@{digest}"),
        "training/single-node": ("objrec-trainer", f"example.pkg.dev/p/r/objrec-trainer@{digest}"),
        "training/multi-node": ("objrec-trainer", f"example.pkg.dev/p/r/objrec-trainer@{digest}"),
    }
    for directory, (name, reference) in pinned.items():
        # What `kustomize edit set image NAME=REPOSITORY@DIGEST` writes.
        kustomization = k8s / directory / "kustomization.yaml"
        content = yaml.safe_load(kustomization.read_text())
        new_name, new_digest = reference.split("@")
        images = [i for i in content.get("images", []) if i["name"] != name]
        content["images"] = [*images, {"name": name, "newName": new_name, "digest": new_digest}]
        kustomization.write_text(yaml.safe_dump(content))
    for manifest in ("base/deployment.yaml", "training/base/job.yaml"):
        path = k8s / manifest
        workload = yaml.safe_load(path.read_text())
        del workload["metadata"]["annotations"]  # the checkov skips
        path.write_text(yaml.safe_dump(workload))
    names = ["gpu", "single-node", "multi-node"]
    rendered_dir = render_to(tmp_path / "rendered", k8s, names)
    for name in names:
        for workload in workloads(yaml.safe_load_all((rendered_dir / f"{name}.yaml").read_text())):
            assert all(c["image"].endswith(digest) for c in pod_spec(workload)["containers"])
    results = checkov(rendered_dir)
    assert results["failed_checks"] == [] and results["skipped_checks"] == []


def test_serving_parameters_flow_from_params_env_into_the_manifests(tmp_path):
    """What cloudbuild.yaml's deploy step does: a new params.env, a new rollout."""
    k8s = copy_k8s(tmp_path)
    release = {
        "model_name": "flowers",
        "model_base_path": "gs://acme-ml/jobs/1a2b3c4/export/flowers",
        "gcp_service_account": "flowers-serving@acme-ml.iam.gserviceaccount.com",
    }
    write_params(k8s / "base" / "params.env", release)
    objects = kustomize(k8s / "overlays" / "gpu")
    text = configmap_file(objects, "objrec-serving-config", "models.config")
    [model] = text_format.Parse(
        text, model_server_config_pb2.ModelServerConfig()
    ).model_config_list.config
    assert (model.name, model.base_path) == (release["model_name"], release["model_base_path"])
    account = find(objects, "ServiceAccount", "objrec-serving")
    assert (
        account["metadata"]["annotations"]["iam.gke.io/gcp-service-account"]
        == (release["gcp_service_account"])
    )
    # A new model is a new ConfigMap name, hence a new pod template: a rollout.
    volume_names = {
        v["configMap"]["name"]
        for deployment in (find(objects, "Deployment"), find(rendered("gpu"), "Deployment"))
        for v in pod_spec(deployment)["volumes"]
        if "configMap" in v
    }
    assert len(volume_names) == 2


def test_an_environment_overlay_can_set_its_own_parameters(tmp_path):
    """The k8s/README.md recipe: merge values into objrec-serving-params, include the component."""
    k8s = copy_k8s(tmp_path)
    staging = k8s / "overlays" / "staging"
    staging.mkdir()
    (staging / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "resources": ["../gpu"],
                "components": ["../../components/serving-params"],
                "configMapGenerator": [
                    {
                        "name": "objrec-serving-params",
                        "behavior": "merge",
                        "literals": ["model_base_path=gs://staging/jobs/x/export/objrec"],
                    }
                ],
            }
        )
    )
    objects = kustomize(staging)
    text = configmap_file(objects, "objrec-serving-config", "models.config")
    assert 'base_path: "gs://staging/jobs/x/export/objrec"' in text
    assert 'name: "objrec"' in text
    assert not [o for o in find_all(objects, "ConfigMap") if "params" in o["metadata"]["name"]]


# Readiness probe against the local TF-Serving-compatible server ----------------------------------


def health_status(port: int, service: str) -> int:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        request = health_pb2.HealthCheckRequest(service=service)
        return health_pb2_grpc.HealthStub(channel).Check(request, timeout=5).status


def test_readiness_probe_is_serving_only_once_the_model_has_loaded(tmp_path):
    """The rendered probe's question, asked of the dev server loading the rendered models.config."""
    model_base_path = tmp_path / "jobs" / "run" / "export" / "objrec"
    model_base_path.mkdir(parents=True)
    k8s = copy_k8s(tmp_path)
    params = read_params(k8s / "base" / "params.env")
    write_params(k8s / "base" / "params.env", {**params, "model_base_path": model_base_path})
    objects = kustomize(k8s / "overlays" / "gpu")
    config_file = tmp_path / "models.config"
    config_file.write_text(configmap_file(objects, "objrec-serving-config", "models.config"))
    probe = container(find(objects, "Deployment"), "tf-serving")["readinessProbe"]["grpc"]
    service = probe.get("service", "")  # what the kubelet sends when the field is unset

    # TF Serving looks for versions once at start-up; the local server polls, so that the
    # model can appear while the test watches.
    with serving_fixtures.running_server(
        model_config_file=str(config_file),
        file_system_poll_wait_seconds=0.1,
        enable_grpc_healthcheck_service=True,
    ) as server:
        assert health_status(server.port, service) == health_pb2.HealthCheckResponse.NOT_SERVING
        serving_fixtures.export_toy_model(model_base_path, version=1)
        deadline = time.monotonic() + 60
        status = health_pb2.HealthCheckResponse.NOT_SERVING
        while status != health_pb2.HealthCheckResponse.SERVING and time.monotonic() < deadline:
            time.sleep(0.1)
            status = health_status(server.port, service)
        assert status == health_pb2.HealthCheckResponse.SERVING


def rendered_server_command_line(objects, config_dir: pathlib.Path) -> list[str]:
    """The tf-serving container's arguments as the kubelet passes them, with the ConfigMap's
    files written to `config_dir` in place of their mount, /etc/tf-serving."""
    deployment = find(objects, "Deployment", "objrec-serving")
    serving = container(deployment, "tf-serving")
    [mount] = [m for m in serving["volumeMounts"] if m["mountPath"] == "/etc/tf-serving"]
    [volume] = [v for v in pod_spec(deployment)["volumes"] if v["name"] == mount["name"]]
    [configmap] = [
        o for o in find_all(objects, "ConfigMap")
        if o["metadata"]["name"] == volume["configMap"]["name"]
    ]  # fmt: skip
    for name, text in configmap["data"].items():
        (config_dir / name).write_text(text)
    # $(CPU_LIMIT) is the container's CPU limit, as its resourceFieldRef (divisor 1) says.
    cpu_limit = str(serving["resources"]["limits"]["cpu"])
    env = {e["name"]: e for e in serving["env"]}
    assert env["CPU_LIMIT"]["valueFrom"]["resourceFieldRef"]["resource"] == "limits.cpu"
    return [
        argument.replace("/etc/tf-serving", str(config_dir)).replace("$(CPU_LIMIT)", cpu_limit)
        for argument in serving["args"]
    ]


def metrics_page(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read().decode()


def processed_batch_sizes(url: str) -> dict[str, float]:
    """How many batches ran, how many of them held one example, and their examples in all."""
    prefix = ":tensorflow:serving:batching_session:processed_batch_size"
    samples = {
        (sample.name, sample.labels.get("le")): sample.value
        for family in text_string_to_metric_families(metrics_page(url))
        for sample in family.samples
        if sample.name.startswith(prefix)
    }
    return {
        "count": samples[(prefix + "_count", None)],
        "of_one": samples[(prefix + "_bucket", "1.0")],
        "examples": samples[(prefix + "_sum", None)],
    }


def concurrent_predicts(port: int, clients: int, image: bytes) -> None:
    """`clients` Predict calls at once; all must succeed."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        request = serving_fixtures.predict_request([image])
        calls = [stub.Predict.future(request, timeout=120) for _ in range(clients)]
        for call in calls:
            call.result()


@pytest.mark.slow
def test_the_local_server_runs_the_cpu_overlays_tf_serving_command_line(tmp_path, toy_version):
    """objrec-serve started with exactly the arguments k8s/overlays/cpu gives TF Serving (paths
    rewritten to a temporary directory): batching, Prometheus metrics and health all work."""
    model_base_path = tmp_path / "export" / "objrec"
    serving_fixtures.copy_version(toy_version, model_base_path, 1)
    k8s = copy_k8s(tmp_path)
    params = read_params(k8s / "base" / "params.env")
    write_params(k8s / "base" / "params.env", {**params, "model_base_path": model_base_path})
    config_dir = tmp_path / "etc-tf-serving"
    config_dir.mkdir()
    args = rendered_server_command_line(kustomize(k8s / "overlays" / "cpu"), config_dir)

    config = cli.parse_args(args)  # every argument accepted, with TF Serving's meaning

    assert (config.port, config.rest_api_port) == (GRPC_PORT, REST_PORT)
    assert config.enable_batching and config.enable_grpc_healthcheck_service
    assert (config.tensorflow_intra_op_parallelism, config.tensorflow_inter_op_parallelism) == (
        4,
        4,
    )
    # Bound to free loopback ports instead of 8500/8501, which another test run may hold.
    config = dataclasses.replace(config, port=0, rest_api_port=0, host="127.0.0.1")
    # A photo-sized image keeps each batch busy long enough for requests to queue behind it.
    rng = np.random.default_rng(0)
    image = serving_fixtures.encode_jpeg(rng.integers(0, 256, (600, 800, 3), dtype=np.uint8))
    with ModelServer(config) as server:
        metrics_path = config_files.prometheus_path(config.monitoring_config_file)
        metrics_url = f"http://127.0.0.1:{server.rest_port}{metrics_path}"
        for service in ("", "ModelService", "PredictionService"):
            assert health_status(server.port, service) == health_pb2.HealthCheckResponse.SERVING
        assert server.batch_scheduler.options.max_batch_size == 16
        assert server.batch_scheduler.options.num_batch_threads == 4

        # With batch_timeout_micros 0 a batch forms only from requests that arrive while all 4
        # batch threads are busy: send rounds of concurrent requests until one has (deadline).
        deadline = time.monotonic() + 300
        batches = processed_batch_sizes(metrics_url)
        while batches["count"] == batches["of_one"] and time.monotonic() < deadline:
            concurrent_predicts(server.port, 32, image)
            batches = processed_batch_sizes(metrics_url)
        assert batches["count"] > batches["of_one"], batches  # some batch merged requests
        assert batches["examples"] > batches["count"]
        page = metrics_page(metrics_url)
    name = params["model_name"]
    assert f':tensorflow:serving:request_count{{model_name="{name}",status="OK"}}' in page
    assert ":tensorflow:serving:request_latency_bucket{" in page


# Training --------------------------------------------------------------------------------------


def failure_policy_action(job: dict, exit_code: int | None, conditions=()) -> str:
    """What the Job controller does with a failed pod: the first matching rule's action, or
    `Count` (towards backoffLimit), as Kubernetes evaluates podFailurePolicy."""
    for rule in job["spec"]["podFailurePolicy"]["rules"]:
        codes = rule.get("onExitCodes")
        if codes and exit_code not in (None, 0):
            matched = exit_code in codes["values"]
            if matched == (codes["operator"] == "In"):
                return rule["action"]
        for condition in rule.get("onPodConditions", []):
            if condition["type"] in conditions:
                return rule["action"]
    return "Count"


@pytest.mark.parametrize("name", TRAINING)
def test_training_jobs_are_preemption_friendly(name):
    objects = rendered(name)
    job = find(objects, "Job")
    spec = job["spec"]
    assert pod_spec(job)["restartPolicy"] == "Never"
    assert spec["backoffLimit"] >= 1
    # Under Cloud Build's timeout, so that the build's wait sees the Job fail.
    build_timeout = int(yaml.safe_load((REPO / "cloudbuild.yaml").read_text())["timeout"][:-1])
    assert 0 < spec["activeDeadlineSeconds"] <= build_timeout - 3600
    assert spec["podReplacementPolicy"] == "Failed"
    assert failure_policy_action(job, EXIT_PREEMPTED) == "Ignore"
    assert failure_policy_action(job, None, ["DisruptionTarget"]) == "Ignore"
    assert failure_policy_action(job, EXIT_USAGE) == "FailJob"
    # A crash: retried on one node; on several, the whole Job stops (no hanging survivors).
    assert failure_policy_action(job, 1) == ("FailJob" if name == "multi-node" else "Count")
    trainer = container(job, "trainer")
    assert trainer["command"] == ["objrec-train"]
    assert "--strategy=auto" in trainer["args"]


@pytest.mark.parametrize("name", TRAINING)
def test_trainer_arguments_come_from_the_parameters(name):
    objects = rendered(name)
    job = find(objects, "Job")
    trainer = container(job, "trainer")
    [source] = trainer["envFrom"]
    params = find(objects, "ConfigMap", source["configMapRef"]["name"])["data"]
    assert params == read_params(K8S / "training" / "base" / "params.env")
    defined = set(params) | {item["name"] for item in trainer.get("env", [])}
    referenced = {ref for arg in trainer["args"] for ref in re.findall(r"\$\((\w+)\)", arg)}
    assert referenced == {"OBJREC_DATA_DIR", "OBJREC_JOB_DIR", "OBJREC_MODEL_NAME"}
    assert referenced <= defined
    account = find(objects, "ServiceAccount", "objrec-trainer")
    assert (
        account["metadata"]["annotations"]["iam.gke.io/gcp-service-account"]
        == (params["GCP_SERVICE_ACCOUNT"])
    )


def test_single_node_job_trains_on_several_gpus():
    job = find(rendered("single-node"), "Job")
    assert job["spec"].get("parallelism", 1) == 1 and "completionMode" not in job["spec"]
    limits = container(job, "trainer")["resources"]["limits"]
    assert int(limits["nvidia.com/gpu"]) > 1  # MirroredStrategy over this pod's GPUs


def tf_configs_of(objects) -> list[dict]:
    """TF_CONFIG of every worker, built by the trainer from the Indexed Job's rendered env."""
    job = find(objects, "Job")
    env = {item["name"]: item["value"] for item in container(job, "trainer")["env"]}
    completions = job["spec"]["completions"]
    return [
        distribution.tf_config_from_indexed_job({**env, "JOB_COMPLETION_INDEX": str(index)})
        for index in range(completions)
    ]


def check_multi_node_wiring(objects) -> list[str]:
    """Asserts that the Indexed Job's peers can find each other; returns their addresses."""
    job = find(objects, "Job")
    service = find(objects, "Service")
    spec, template = job["spec"], job["spec"]["template"]
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == spec["parallelism"] >= 2
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True
    assert template["spec"]["subdomain"] == service["metadata"]["name"]
    assert selects(service["spec"]["selector"], template["metadata"]["labels"])
    trainer = container(job, "trainer")
    worker_port = next(p["containerPort"] for p in trainer["ports"] if p["name"] == "tf-worker")
    assert [p["port"] for p in service["spec"]["ports"]] == [worker_port]

    configs = tf_configs_of(objects)
    addresses = configs[0]["cluster"]["worker"]
    # Pod <job>-<index> of an Indexed Job has that hostname, under its subdomain.
    job_name, service_name = job["metadata"]["name"], service["metadata"]["name"]
    assert addresses == [
        f"{job_name}-{index}.{service_name}:{worker_port}" for index in range(len(configs))
    ]
    for index, config in enumerate(configs):
        assert config["cluster"]["worker"] == addresses
        assert config["task"] == {"type": "worker", "index": index}
    return addresses


def test_multi_node_tf_config_from_the_rendered_environment():
    addresses = check_multi_node_wiring(rendered("multi-node"))
    assert addresses == [
        "objrec-train-0.objrec-train-workers:2222",
        "objrec-train-1.objrec-train-workers:2222",
    ]


def test_multi_node_wiring_survives_a_run_name_and_more_workers(tmp_path):
    """cloudbuild.yaml's `kustomize edit set namesuffix`, and `set replicas`, as they edit it."""
    k8s = copy_k8s(tmp_path)
    kustomization = k8s / "training" / "multi-node" / "kustomization.yaml"
    content = yaml.safe_load(kustomization.read_text())
    content["nameSuffix"] = "-1a2b3c4"
    content["replicas"] = [{"name": "objrec-train", "count": 4}]
    kustomization.write_text(yaml.safe_dump(content))
    objects = kustomize(kustomization.parent)
    addresses = check_multi_node_wiring(objects)
    assert addresses[3] == "objrec-train-1a2b3c4-3.objrec-train-workers:2222"
    # The Workload Identity binding names the ServiceAccount: a run's suffix must not rename it;
    # the NetworkPolicy and the workers' Service serve every run.
    job = find(objects, "Job")
    assert pod_spec(job)["serviceAccountName"] == "objrec-trainer"
    find(objects, "ServiceAccount", "objrec-trainer")
    find(objects, "NetworkPolicy", "objrec-trainer")
    find(objects, "Service", "objrec-train-workers")


def test_training_network_policy_admits_only_training_peers():
    objects = rendered("multi-node")
    policy = find(objects, "NetworkPolicy", "objrec-trainer")["spec"]
    pod_labels = find(objects, "Job")["spec"]["template"]["metadata"]["labels"]
    assert selects(policy["podSelector"]["matchLabels"], pod_labels)
    [rule] = policy["ingress"]
    [peer] = rule["from"]
    assert set(peer) == {"podSelector"} and selects(peer["podSelector"]["matchLabels"], pod_labels)


def test_prometheus_podmonitoring_matches_the_serving_pods():
    """k8s/extras' custom resource: no schema to validate against, so checked here."""
    monitor = yaml.safe_load((K8S / "extras" / "gmp-podmonitoring.yaml").read_text())
    deployment = find(rendered("gpu"), "Deployment")
    assert monitor["metadata"]["namespace"] == deployment["metadata"]["namespace"]
    assert selects(
        monitor["spec"]["selector"]["matchLabels"],
        deployment["spec"]["template"]["metadata"]["labels"],
    )
    [endpoint] = monitor["spec"]["endpoints"]
    ports = {p["name"] for p in container(deployment, "tf-serving")["ports"]}
    assert endpoint["port"] in ports
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert endpoint["path"] == annotations["prometheus.io/path"]


# The trainer image -----------------------------------------------------------------------------


def dockerfile_instructions(path: pathlib.Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def test_trainer_image_has_the_vertex_extra_pinned():
    """cloudml-hypertune, through which objrec-train reports to Vertex AI's tuning."""
    vertex = (REPO / "requirements-vertex.txt").read_text().split()
    assert "cloudml-hypertune==0.1.0.dev6" in vertex
    assert "cloudml-hypertune==0.1.0.dev6\n" in (REPO / "constraints.txt").read_text()
    installs = [arg for kind, arg in dockerfile_instructions(REPO / "docker" / "trainer.Dockerfile")
                if kind == "RUN" and "pip install" in arg]  # fmt: skip
    assert any("-r requirements-vertex.txt" in arg and "-c constraints.txt" in arg
               for arg in installs)  # fmt: skip
    assert (
        '"vertex": read_requirements("requirements-vertex.txt")' in (REPO / "setup.py").read_text()
    )


def test_trainer_image_is_pinned_and_copies_only_existing_files():
    dockerfile = REPO / "docker" / "trainer.Dockerfile"
    instructions = dockerfile_instructions(dockerfile)
    defaults = dict(arg.split("=", 1) for kind, arg in instructions if kind == "ARG" and "=" in arg)
    requirements = (REPO / "requirements.txt").read_text()
    assert f"tensorflow=={defaults['TF_VERSION']}\n" in requirements
    assert f"apache-beam[gcp]=={defaults['BEAM_VERSION']}\n" in requirements

    bases = [
        re.sub(r"\$\{(\w+)\}", lambda m: defaults[m.group(1)], arg.split()[0])
        for kind, arg in instructions
        if kind == "FROM"
    ]
    assert bases == [
        f"apache/beam_python{defaults['PYTHON_VERSION']}_sdk:{defaults['BEAM_VERSION']}",
        f"tensorflow/tensorflow:{defaults['TF_VERSION']}-gpu",
    ]
    for base in bases:
        tag = base.rsplit(":", 1)[1]
        assert re.fullmatch(r"\d+\.\d+\.\d+(-gpu)?", tag), f"{base}: pin a release tag"

    allowed = {
        line.removeprefix("!").rstrip("/")
        for line in (REPO / "docker" / "trainer.Dockerfile.dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    copies = [arg.split() for kind, arg in instructions if kind == "COPY"]
    sources = [path for args in copies if not args[0].startswith("--") for path in args[:-1]]
    assert sources, "no COPY found"
    for source in sources:
        assert (REPO / source).exists(), f"COPY {source}: no such file"
        assert source.rstrip("/") in allowed, f"{source} is excluded from the build context"
    assert ["--from=beam_sdk", "/opt/apache/beam", "/opt/apache/beam"] in copies
    assert ("ENTRYPOINT", '["/opt/apache/beam/boot"]') in instructions
    # Everything setup.py packages is in the image.
    packages = re.search(r"include=\[([^\]]*)\]", (REPO / "setup.py").read_text()).group(1)
    for package in re.findall(r'"(\w+)"', packages):
        assert f"{package}/" in sources, f"package {package} not copied"


# cloudbuild.yaml -------------------------------------------------------------------------------


@functools.cache
def cloudbuild() -> dict:
    return yaml.safe_load((REPO / "cloudbuild.yaml").read_text())


def substituted(text: str) -> str:
    """Cloud Build's substitutions of the build's defaults ($_X and ${_X}), for paths."""
    values = {key: str(value) for key, value in cloudbuild()["substitutions"].items()}
    for _ in range(3):  # dynamic substitutions may nest
        text = re.sub(r"\$\{?(_[A-Z0-9_]+)\}?", lambda m: values.get(m.group(1), m.group(0)), text)
    return text


def step_texts(step: dict) -> list[str]:
    return [step.get("script", ""), step.get("dir", ""), *map(str, step.get("args", []))]


def test_cloudbuild_passes_the_cloud_build_schema():
    result = subprocess.run(
        [
            str(VENV_BIN / "check-jsonschema"),
            "--builtin-schema",
            "vendor.cloudbuild",
            str(REPO / "cloudbuild.yaml"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_cloudbuild_references_only_files_that_exist():
    path_pattern = re.compile(r"(?<![\w/.-])((?:\.ci|docker|k8s|scripts)/[\w./-]*[\w])")
    referenced = set()
    for step in cloudbuild()["steps"]:
        for text in step_texts(step):
            referenced.update(path_pattern.findall(substituted(text)))
        if "dir" in step:
            assert (REPO / substituted(step["dir"]) / "kustomization.yaml").is_file()
    assert {"docker/trainer.Dockerfile", "scripts/promotion_gate.py", ".ci/run"} <= referenced
    for path in referenced:
        assert (REPO / path).exists(), f"cloudbuild.yaml names {path}, which does not exist"


def test_cloudbuild_steps_are_valid_bash_and_well_formed():
    ids = [step["id"] for step in cloudbuild()["steps"]]
    assert len(ids) == len(set(ids))
    for step in cloudbuild()["steps"]:
        assert set(step.get("waitFor", [])) <= {"-", *ids}, step["id"]
        if "script" in step:
            # Cloud Build refuses `script` together with `args` or `entrypoint`.
            assert not {"args", "entrypoint"} & set(step), step["id"]
            # The kustomize image is Alpine's, with sh only; every other step runs bash.
            shell = "sh" if step["name"].startswith("registry.k8s.io/kustomize/") else "bash"
            header = {
                "bash": "#!/usr/bin/env bash\nset -euo pipefail\n",
                "sh": "#!/bin/sh\nset -eu\n",
            }
            assert step["script"].startswith(header[shell]), step["id"]
            result = subprocess.run(
                [shell, "-n"], input=step["script"], capture_output=True, text=True
            )
            assert result.returncode == 0, f"{step['id']}: {result.stderr}"
    order = ["test", "push-trainer", "train", "golden-requests", "promotion-gate", "deploy"]
    assert [ids.index(step) for step in order] == sorted(ids.index(step) for step in order)


def heredoc_keys(script: str, target: str) -> set[str]:
    """The keys a step's `cat > TARGET <<EOF` writes."""
    body = re.search(rf"cat > {re.escape(target)} <<EOF\n(.*?)\nEOF", script, re.S).group(1)
    return {line.split("=", 1)[0] for line in body.splitlines()}


def test_cloudbuild_writes_the_parameters_the_manifests_read():
    steps = {step["id"]: step for step in cloudbuild()["steps"]}
    assert heredoc_keys(steps["deploy"]["script"], "k8s/base/params.env") == set(
        read_params(K8S / "base" / "params.env")
    )
    assert heredoc_keys(
        steps["configure-training"]["script"], "k8s/training/base/params.env"
    ) == set(read_params(K8S / "training" / "base" / "params.env"))


def test_cloudbuild_names_match_the_manifests():
    substitutions = cloudbuild()["substitutions"]
    base = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    [serving_image] = base["images"]
    # The build checks the TF Serving release the cluster runs (CPU build of it).
    assert (
        substitutions["_TF_SERVING_IMAGE"] == f"{serving_image['name']}:{serving_image['newTag']}"
    )
    assert (K8S / "overlays" / substitutions["_SERVING_OVERLAY"]).is_dir()
    assert (K8S / "training" / substitutions["_TRAINING"]).is_dir()
    steps = {step["id"]: step for step in cloudbuild()["steps"]}
    # The trainer by the digest push-trainer recorded; TF Serving by the digest of the tag the
    # serving overlay renders, resolved by pin-serving-images.
    assert 'docker push "$_TRAINER_IMAGE"' in steps["push-trainer"]["script"]
    assert "/workspace/trainer_image" in steps["push-trainer"]["script"]
    assert (
        'kustomize edit set image "objrec-trainer=$(cat /workspace/trainer_image)"'
        in steps["set-trainer-image"]["script"]
    )
    assert steps["set-serving-image"]["dir"] == "k8s/overlays/${_SERVING_OVERLAY}"
    assert (
        'kustomize edit set image "tensorflow/serving=$(cat /workspace/serving_image)"'
        in steps["set-serving-image"]["script"]
    )
    assert 'kubectl kustomize "k8s/overlays/$_SERVING_OVERLAY"' in steps["serving-images"]["script"]
    assert steps["deploy"]["waitFor"] == ["set-serving-image"]
    assert "$(cat /workspace/tf_serving_image)" in steps["start-tf-serving"]["script"]
    for name in TRAINING:
        job = find(rendered(name), "Job")
        assert container(job, "trainer")["image"] == "objrec-trainer"
        # train waits for objrec-train-$SHORT_SHA: the Job's name plus the run suffix.
        assert f'job="{job["metadata"]["name"]}-$SHORT_SHA"' in steps["train"]["script"]
    deployment = find(rendered("gpu"), "Deployment")
    assert f"deployment/{deployment['metadata']['name']}" in steps["deploy"]["script"]
    assert f"-n {deployment['metadata']['namespace']} " in steps["deploy"]["script"]
    # The gate reads the annotation that k8s/components/serving-params writes.
    assert r"objrec\.dev/model-base-path" in steps["serving-release"]["script"]


def test_the_builds_tf_serving_check_batches_as_production_and_keeps_its_log_on_failure():
    steps = {step["id"]: step for step in cloudbuild()["steps"]}
    start = steps["start-tf-serving"]["script"]
    serving = container(find(rendered("base"), "Deployment"), "tf-serving")
    for flag in serving["args"]:
        if flag.startswith(
            ("--enable_batching", "--batching_parameters_file", "--enable_model_warmup")
        ):
            assert flag in start, flag
    # The overlays' files, as the ConfigMap mounts them at /etc/tf-serving.
    assert "docker cp k8s/base/tf-serving/. tf-serving:/etc/tf-serving/" in start
    # A failed golden request must not skip the steps that save TF Serving's log: the failure
    # is reported after the log is in the job directory.
    assert steps["golden-requests"]["allowFailure"] is True
    assert steps["golden-requests"]["script"].rstrip().endswith("touch /workspace/golden.ok")
    assert steps["tf-serving-log"]["waitFor"] == ["golden-requests"]
    checks = steps["tf-serving-checks"]["script"]
    assert checks.index("gcloud storage cp /workspace/tf-serving.log") < checks.index("golden.ok")
    assert steps["serving-release"]["waitFor"] == ["tf-serving-checks"]


@pytest.mark.parametrize("document", ["docs/deploy.md", "k8s/README.md"])
def test_deployment_docs_name_only_files_that_exist(document):
    text = (REPO / document).read_text()
    paths = set(re.findall(r"(?<![\w/.$-])((?:docker|k8s|scripts|docs)/[\w./-]*[\w])", text))
    assert paths
    # The README's example of an overlay of your own is a file to create.
    for path in paths - {"k8s/overlays/staging/kustomization.yaml"}:
        assert (REPO / path).exists() or (K8S / path).exists(), f"{document} names {path}"


def test_the_deployment_guide_enables_what_workload_identity_and_gpus_need():
    text = (REPO / "docs" / "deploy.md").read_text()
    enabled = re.search(r"gcloud services enable ([^`]*?)\n```", text, re.S).group(1)
    # Workload Identity mints pod tokens through the IAM Service Account Credentials API.
    assert "iamcredentials.googleapis.com" in enabled.split()
    quota_step = text.index("PREEMPTIBLE_NVIDIA_L4_GPUS")
    assert quota_step < text.index("gcloud container node-pools create serving-l4")
    assert "NVIDIA_L4_GPUS" in text[:quota_step]


def test_the_training_wait_fails_when_no_pod_runs_for_a_bounded_time():
    steps = {
        step["id"]: step for step in yaml.safe_load((REPO / "cloudbuild.yaml").read_text())["steps"]
    }
    script = steps["train"]["script"]
    substitutions = yaml.safe_load((REPO / "cloudbuild.yaml").read_text())["substitutions"]
    assert 0 < int(substitutions["_MAX_PENDING_MINUTES"]) <= 120
    # Pending (no quota) and ImagePullBackOff pods are phase Pending: only a running pod
    # resets the clock; past it the Job is deleted and the build fails.
    assert '*" Running "*' in script and "_MAX_PENDING_MINUTES * 60" in script
    assert 'kubectl -n objrec delete job "$job"' in script.split("_MAX_PENDING_MINUTES * 60")[1]


@pytest.mark.parametrize("name", TRAINING)
def test_training_pods_find_the_node_driver_and_expect_their_gpus(name):
    trainer = container(find(rendered(name), "Job"), "trainer")
    env = {item["name"]: item.get("value") for item in trainer["env"]}
    assert "/usr/local/nvidia/lib64" in env["LD_LIBRARY_PATH"].split(":")
    assert env["OBJREC_EXPECTED_GPUS"] == str(trainer["resources"]["limits"]["nvidia.com/gpu"])
