"""Dataflow, offline: the job builds for DataflowRunner, and the staged package is complete.

Nothing leaves the machine: `no_network` fails any connection or name lookup that is not
127.0.0.1 (the GCS emulator), the Dataflow API client may not even be created, and
`--dry_run True` makes Beam's DataflowRunner build the job (pipeline proto, worker
environment, package staged in a local temporary folder) without credentials or submitting.
"""

import pathlib
import shutil
import socket
import subprocess
import sys
import tarfile

import pytest
from apache_beam.options.pipeline_options import WorkerOptions
from apache_beam.portability.api import beam_runner_api_pb2
from apache_beam.runners.dataflow.internal import apiclient

from preprocessing import pipeline
from preprocessing.errors import PreprocessError
from tests import REPO
from tests.dataset_fixtures import write_class_images

LOOPBACK = {"127.0.0.1", "::1", "localhost"}
MACHINE_TYPE = "n2-standard-4"
CONTAINER = "us-central1-docker.pkg.dev/objrec-test/objrec/beam-worker:1"
# What a worker needs besides the Python packages: setup.py reads requirements.txt.
PACKAGE_FILES = ("setup.py", "requirements.txt")


@pytest.fixture
def no_network(monkeypatch):
    """Fails every connection and DNS lookup that is not to this machine; lists them."""
    attempts = []
    connect, getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def guarded_connect(sock, address):
        if isinstance(address, tuple) and address[0] not in LOOPBACK:
            attempts.append(address)
            raise OSError(f"test blocked a connection to {address}")
        return connect(sock, address)

    def guarded_getaddrinfo(host, *args, **kwargs):
        if host not in LOOPBACK:
            attempts.append(host)
            raise socket.gaierror(f"test blocked a lookup of {host}")
        return getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket, "getaddrinfo", guarded_getaddrinfo)
    yield attempts
    assert attempts == [], "something tried to leave the machine"


def dataflow_flags(temp_location: str) -> list[str]:
    """The README's Dataflow flags, with a made-up project, and --dry_run."""
    return [
        "--runner",
        "DataflowRunner",
        "--project",
        "objrec-test",
        "--region",
        "us-central1",
        "--temp_location",
        temp_location,
        "--setup_file",
        str(REPO / "setup.py"),
        "--machine_type",
        MACHINE_TYPE,
        "--max_num_workers",
        "20",
        "--sdk_container_image",
        CONTAINER,
        "--dry_run",
        "True",
    ]


def staged_files(job) -> dict[str, pathlib.Path]:
    """The files Beam staged for the workers, by the name they get in the staging bucket."""
    staged = {}
    for environment in job.proto_pipeline.components.environments.values():
        for artifact in environment.dependencies:
            path = beam_runner_api_pb2.ArtifactFilePayload.FromString(artifact.type_payload).path
            name = beam_runner_api_pb2.ArtifactStagingToRolePayload.FromString(
                artifact.role_payload
            ).staged_name
            staged[name] = pathlib.Path(path)
    return staged


def python_files(root: pathlib.Path, packages=("objrec", "preprocessing")) -> set[str]:
    return {
        path.relative_to(root).as_posix()
        for package in packages
        for path in (root / package).glob("*.py")
    }


@pytest.mark.slow
def test_dataflow_job_builds_offline_with_the_readme_options(
    gcs_bucket,  # noqa: F811
    no_network,
    monkeypatch,
    capsys,
    tmp_path,
):
    write_class_images(tmp_path / "local", {"cat": 2, "dog": 1})
    for path in sorted((tmp_path / "local").rglob("*.*")):
        name = path.relative_to(tmp_path / "local").as_posix()
        gcs_bucket.blob(f"images/{name}").upload_from_filename(str(path))
    # The Dataflow API client may talk gRPC, whose C core no Python socket patch sees: it
    # must never be made (Beam returns before making it on a dry run).
    monkeypatch.setattr(
        apiclient.DataflowApplicationClient,
        "__init__",
        lambda *args, **kwargs: pytest.fail("a Dataflow API client was created"),
    )
    built = []
    launch = pipeline.launch
    monkeypatch.setattr(pipeline, "launch", lambda *args: built.append(launch(*args)) or built[0])
    argv = ["--input", "gs://objrec-test/images", "--output", "gs://objrec-test/dataset"]

    metadata = pipeline.run(
        [*argv, *dataflow_flags("gs://objrec-test/tmp")], save_main_session=False
    )

    assert metadata is None
    assert "Dry run: built the class_folders job" in capsys.readouterr().out
    (result,) = built
    job = result.job
    staged = staged_files(job)
    try:
        # Every step of build_pipeline is in the job Dataflow would get.
        steps = {
            transform.unique_name for transform in job.proto_pipeline.components.transforms.values()
        }
        assert {
            "ReadInputs",
            "CollectLabels",
            "CountRepeats",
            "ReadAndEncode",
            "ResolveDuplicates",
            "ResolveDuplicates/GroupByContent",
            "ResolveDuplicates/JoinKeeper",
            "BuildRecord",
            "WriteShards",
            "WriteRejectedLog",
            "WriteDuplicatesLog",
            "WriteLabelsAndMetadata",
        } <= steps
        assert job.options.view_as(WorkerOptions).machine_type == MACHINE_TYPE
        # The worker pool of the Dataflow API request, built offline from the same job.
        environment = apiclient.Environment(
            [], job.options, apiclient._FNAPI_ENVIRONMENT_MAJOR_VERSION, "", job.proto_pipeline
        )
        (workers,) = environment.proto.worker_pools
        assert workers.machine_type == MACHINE_TYPE
        assert workers.autoscaling_settings.max_num_workers == 20
        assert [image.container_image for image in workers.sdk_harness_container_images] == [
            CONTAINER
        ]
        # The package built from --setup_file, as Beam staged it for the workers.
        assert "workflow.tar.gz" in staged
        with tarfile.open(staged["workflow.tar.gz"]) as tarball:
            names = {name.split("/", 1)[1] for name in tarball.getnames() if "/" in name}
        assert python_files(REPO) | set(PACKAGE_FILES) <= names
    finally:
        for path in staged.values():
            shutil.rmtree(path.parent, ignore_errors=True)  # Beam leaves its staging dir
    # Nothing ran: the output has no files (the write check's probe is deleted again).
    assert list(gcs_bucket.client.list_blobs("objrec-test", prefix="dataset/")) == []


def test_local_paths_with_dataflow_are_an_error_before_any_work(tmp_path, no_network):
    write_class_images(tmp_path / "in", {"cat": 1})
    argv = ["--input", str(tmp_path / "in"), "--output", "gs://bucket/out"]
    with pytest.raises(PreprocessError, match=r"--input .*/in is a local path, which Dataflow"):
        pipeline.run([*argv, *dataflow_flags("gs://bucket/tmp")], save_main_session=False)


def test_template_location_is_an_error_before_any_work(tmp_path, no_network):
    argv = ["--input", "gs://bucket/in", "--output", "gs://bucket/out"]
    flags = [*dataflow_flags("gs://bucket/tmp"), "--template_location", str(tmp_path / "t")]
    with pytest.raises(PreprocessError, match="--template_location is not supported"):
        pipeline.run([*argv, *flags], save_main_session=False)


def test_a_misspelt_beam_flag_is_an_error_before_any_work(tmp_path, no_network):
    argv = ["--input", str(tmp_path), "--output", str(tmp_path / "out"), "--projct", "p"]
    with pytest.raises(PreprocessError, match="unknown flag --projct: neither objrec-preprocess"):
        pipeline.run(argv, save_main_session=False)


def test_an_unknown_flag_is_named_as_typed_with_the_flag_it_likely_meant(tmp_path, no_network):
    argv = ["--input", str(tmp_path), "--output", str(tmp_path / "out"), "--image-size", "32"]
    with pytest.raises(PreprocessError) as error:
        pipeline.run(argv, save_main_session=False)
    assert str(error.value).startswith(
        "unknown flag --image-size (did you mean --image_size?): neither objrec-preprocess"
    )


def run_python(code: str, cwd: pathlib.Path) -> str:
    completed = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, check=False
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed.stdout


@pytest.mark.slow
def test_the_sdist_holds_every_module_a_worker_imports(tmp_path):
    # egg_info into tmp_path too: building the package leaves the repository untouched.
    build = subprocess.run(
        [
            sys.executable,
            "setup.py",
            "-q",
            "egg_info",
            "--egg-base",
            str(tmp_path),
            "sdist",
            "--dist-dir",
            str(tmp_path),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    (tarball,) = tmp_path.glob("objrec-*.tar.gz")
    with tarfile.open(tarball) as archive:
        archive.extractall(tmp_path / "unpacked", filter="data")
    (unpacked,) = (tmp_path / "unpacked").iterdir()

    # A worker unpickles the job's DoFns and functions: it imports preprocessing.pipeline and
    # everything it reaches. Imported from the unpacked sdist alone (the working directory
    # comes first on sys.path), every objrec module must be found there, none in the repo.
    loaded = run_python(
        "import sys, preprocessing.pipeline\n"
        "for name, module in sorted(sys.modules.items()):\n"
        "    if name.split('.')[0] in ('objrec', 'preprocessing', 'trainer', 'serving'):\n"
        "        print(module.__file__)\n",
        cwd=unpacked,
    ).split()
    loaded_paths = {pathlib.Path(path).resolve() for path in loaded}
    assert all(path.is_relative_to(unpacked.resolve()) for path in loaded_paths), loaded
    assert {path.relative_to(unpacked.resolve()).as_posix() for path in loaded_paths} >= {
        "objrec/contract.py",
        "preprocessing/pipeline.py",
        "preprocessing/inputs.py",
        "preprocessing/manifest.py",
        "preprocessing/sources.py",
        "preprocessing/transforms.py",
        "preprocessing/image_io.py",
        "preprocessing/records.py",
        "preprocessing/metrics.py",
    }
    # And every module of the two packages, and what setup.py reads when pip installs it on a
    # worker (install_requires comes from requirements.txt).
    assert python_files(REPO) <= python_files(unpacked)
    for name in PACKAGE_FILES:
        assert (unpacked / name).read_bytes() == (REPO / name).read_bytes()
