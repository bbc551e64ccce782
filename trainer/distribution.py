"""Distribution strategy choice, TF_CONFIG, and where each worker may write."""

import json
import logging
import os
from collections.abc import Mapping, Sequence

import keras
import tensorflow as tf

STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker")


def cluster_size(tf_config: Mapping) -> int:
    """Number of training tasks (chief and workers) that TF_CONFIG names."""
    cluster = tf_config.get("cluster", {})
    return sum(len(cluster.get(role, [])) for role in ("chief", "worker"))


def read_tf_config(environ: Mapping[str, str] | None = None) -> dict:
    environ = os.environ if environ is None else environ
    return json.loads(environ.get("TF_CONFIG") or "{}")


def build_tf_config(worker_addresses: Sequence[str], index: int) -> dict:
    """TF_CONFIG for worker `index` of a chief-less cluster (worker 0 acts as chief)."""
    if not 0 <= index < len(worker_addresses):
        raise ValueError(f"worker index {index} outside 0..{len(worker_addresses) - 1}")
    return {
        "cluster": {"worker": list(worker_addresses)},
        "task": {"type": "worker", "index": index},
    }


# Set by k8s/'s multi-node training Job (an Indexed Job behind a headless Service); Kubernetes
# itself sets JOB_COMPLETION_INDEX. Pod `<job>-<index>` answers at `<job>-<index>.<service>`.
INDEXED_JOB_ENV = ("OBJREC_JOB_NAME", "OBJREC_WORKER_SERVICE", "OBJREC_NUM_WORKERS")


def tf_config_from_indexed_job(environ: Mapping[str, str]) -> dict | None:
    """TF_CONFIG for a pod of a Kubernetes Indexed Job, None outside one.

    Uses OBJREC_JOB_NAME, OBJREC_WORKER_SERVICE, OBJREC_NUM_WORKERS, OBJREC_WORKER_PORT
    (default 2222) and the JOB_COMPLETION_INDEX that Kubernetes gives each pod.
    """
    if not all(environ.get(name) for name in (*INDEXED_JOB_ENV, "JOB_COMPLETION_INDEX")):
        return None
    job, service = environ["OBJREC_JOB_NAME"], environ["OBJREC_WORKER_SERVICE"]
    port = int(environ.get("OBJREC_WORKER_PORT", "2222"))
    addresses = [
        f"{job}-{index}.{service}:{port}" for index in range(int(environ["OBJREC_NUM_WORKERS"]))
    ]
    return build_tf_config(addresses, int(environ["JOB_COMPLETION_INDEX"]))


def export_tf_config(environ: dict | None = None) -> dict:
    """Sets TF_CONFIG from an Indexed Job's environment unless it is set; returns it."""
    environ = os.environ if environ is None else environ
    if not environ.get("TF_CONFIG"):
        tf_config = tf_config_from_indexed_job(environ)
        if tf_config:
            environ["TF_CONFIG"] = json.dumps(tf_config)
    return read_tf_config(environ)


def resolve_strategy_name(requested: str, tf_config: Mapping, num_gpus: int) -> str:
    """`auto`: several tasks in TF_CONFIG -> multi_worker; several GPUs -> mirrored."""
    if requested not in STRATEGIES:
        raise ValueError(f"--strategy {requested}: choose one of {', '.join(STRATEGIES)}")
    if requested != "auto":
        return requested
    if cluster_size(tf_config) > 1:
        return "multi_worker"
    if num_gpus > 1:
        return "mirrored"
    return "one_device"


# Set by k8s/training to the GPUs the pod requested (nvidia.com/gpu).
EXPECTED_GPUS_VARIABLE = "OBJREC_EXPECTED_GPUS"


def check_expected_gpus(num_gpus: int, environ: Mapping[str, str]) -> None:
    """Refuses to train on the CPUs of a machine that was given GPUs TensorFlow cannot see.

    Raises:
        ValueError: fewer GPUs visible than OBJREC_EXPECTED_GPUS says were requested.
    """
    expected = int(environ.get(EXPECTED_GPUS_VARIABLE) or 0)
    if num_gpus < expected:
        raise ValueError(
            f"{EXPECTED_GPUS_VARIABLE}={expected} GPUs were requested but TensorFlow sees "
            f"{num_gpus}: put the NVIDIA driver's libraries on LD_LIBRARY_PATH (on GKE "
            "/usr/local/nvidia/lib64) or unset the variable to train on the CPUs"
        )


def create_strategy(requested: str) -> tf.distribute.Strategy:
    """The strategy for this machine (and cluster, from TF_CONFIG).

    Raises:
        ValueError: the pod was given GPUs that TensorFlow cannot see (check_expected_gpus).
    """
    num_gpus = len(tf.config.list_physical_devices("GPU"))
    check_expected_gpus(num_gpus, os.environ)
    name = resolve_strategy_name(requested, export_tf_config(), num_gpus)
    if name == "multi_worker":
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    elif name == "mirrored":
        strategy = tf.distribute.MirroredStrategy()
    else:
        strategy = tf.distribute.OneDeviceStrategy("/gpu:0" if num_gpus else "/cpu:0")
    logging.info(
        "strategy %s: %d replicas in sync", type(strategy).__name__, strategy.num_replicas_in_sync
    )
    return strategy


def cluster_resolver_of(
    strategy: tf.distribute.Strategy,
) -> tf.distribute.cluster_resolver.ClusterResolver | None:
    """The strategy's cluster resolver, or None for a single machine."""
    return getattr(strategy, "cluster_resolver", None)


def task_of(strategy: tf.distribute.Strategy) -> tuple[str | None, int]:
    resolver = cluster_resolver_of(strategy)
    if resolver is None or not resolver.cluster_spec().jobs:
        return None, 0
    return resolver.task_type, resolver.task_id or 0


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """The chief task, or worker 0 when the cluster has no chief, or a single machine."""
    task_type, task_id = task_of(strategy)
    if task_type is None or task_type == "chief":
        return True
    resolver = cluster_resolver_of(strategy)
    has_chief = "chief" in resolver.cluster_spec().jobs
    return task_type == "worker" and task_id == 0 and not has_chief


def worker_write_dir(directory: str, strategy: tf.distribute.Strategy) -> str:
    """Where this worker saves: the real directory for the chief, a private one otherwise.

    Under MultiWorkerMirroredStrategy every worker must take part in a save (variables may
    need a collective to be read), but only the chief's copy is kept.
    """
    if is_chief(strategy):
        return directory
    task_type, task_id = task_of(strategy)
    return tf.io.gfile.join(directory, f".{task_type}-{task_id}-temp")


def cpu_computes_bfloat16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU has bfloat16 instructions (AVX512-BF16 or AMX), which oneDNN uses."""
    try:
        with open(cpuinfo) as file:
            flags = {flag for line in file if line.startswith("flags") for flag in line.split()}
    except OSError:
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def resolve_precision_policy(requested: str, num_gpus: int, cpu_bfloat16: bool = False) -> str:
    """`auto`: float16 compute on GPUs (tensor cores); on a CPU with bfloat16 instructions,
    bfloat16 compute (ResNet50 at 32 px on 2 such cores: 160 against 137 images/s); float32
    on other CPUs, where half precision only slows. Variables and the export stay float32."""
    policies = {"off": "float32", "float16": "mixed_float16", "bfloat16": "mixed_bfloat16"}
    if requested == "auto":
        if num_gpus:
            return "mixed_float16"
        return "mixed_bfloat16" if cpu_bfloat16 else "float32"
    if requested not in policies:
        raise ValueError(f"--mixed_precision {requested}: choose auto, off, float16 or bfloat16")
    return policies[requested]


def set_precision_policy(requested: str) -> str:
    """Sets Keras's global policy to what --mixed_precision `requested` means on this machine
    (resolve_precision_policy) and returns it."""
    num_gpus = len(tf.config.list_physical_devices("GPU"))
    policy = resolve_precision_policy(
        requested, num_gpus, cpu_bfloat16=not num_gpus and cpu_computes_bfloat16()
    )
    keras.mixed_precision.set_global_policy(policy)
    logging.info("precision policy %s (--mixed_precision %s)", policy, requested)
    return policy
