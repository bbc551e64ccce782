# syntax=docker/dockerfile:1
# The objrec trainer image: `objrec-train` on Kubernetes (k8s/training/) and on Vertex AI, and the
# custom worker container of `objrec-preprocess` on Dataflow. Nothing in it is built at run time.
#
# Build from the repository root (cloudbuild.yaml does, tagging the image with the commit):
#
#   docker build -f docker/trainer.Dockerfile \
#       --build-arg OBJREC_SOURCE_COMMIT="$(git rev-parse HEAD)" -t objrec-trainer .
#
# BuildKit (Docker's default builder) sends only what trainer.Dockerfile.dockerignore allows.
#
# Base: TensorFlow's own GPU image at the TensorFlow version of requirements.txt, so CUDA and
# cuDNN are the ones that release was built and tested with (the same wheel runs on CPU-only
# nodes and Dataflow workers, which have no GPU).
#
# Dataflow: a custom worker container must (1) start Apache Beam's `boot` program, (2) have the
# Beam version of the launcher and (3) its Python minor version. Dataflow's documented recipe for
# a base that is not a Beam SDK image is followed: copy /opt/apache/beam from the Beam SDK image
# of the pinned Beam version and make `boot` the entrypoint. Kubernetes Jobs and Vertex AI set
# `command: [objrec-train]` instead. Launching `objrec-preprocess` from this same image (as
# cloudbuild.yaml does, with --sdk_container_image) makes (2) and (3) hold by construction; the
# build checks them below rather than leaving a mismatch to fail workers at run time.
#
# Tags: tensorflow/tensorflow:2.21.0-gpu and apache/beam_python3.11_sdk:2.77.0 follow their
# projects' release tag schemes; `docker manifest inspect IMAGE:TAG` shows whether a tag exists.
# Pin by digest too (IMAGE:TAG@sha256:...) where builds must be bit-for-bit reproducible.
ARG TF_VERSION=2.21.0
ARG BEAM_VERSION=2.77.0
ARG PYTHON_VERSION=3.11

FROM apache/beam_python${PYTHON_VERSION}_sdk:${BEAM_VERSION} AS beam_sdk

FROM tensorflow/tensorflow:${TF_VERSION}-gpu
ARG TF_VERSION
ARG BEAM_VERSION
ARG PYTHON_VERSION
ARG OBJREC_SOURCE_COMMIT=unknown

LABEL org.opencontainers.image.title="objrec-trainer" \
      org.opencontainers.image.revision="${OBJREC_SOURCE_COMMIT}"

# OBJREC_SOURCE_COMMIT goes into every run.json the trainer writes (trainer/lineage.py).
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    OBJREC_SOURCE_COMMIT=${OBJREC_SOURCE_COMMIT}

RUN python3 -c "import sys; v = '%d.%d' % sys.version_info[:2]; \
assert v == '${PYTHON_VERSION}', 'the base image has Python ' + v + ': build with --build-arg PYTHON_VERSION=' + v"

COPY --from=beam_sdk /opt/apache/beam /opt/apache/beam

WORKDIR /opt/objrec

# The pinned dependencies in their own layer: rebuilt only when a pin changes. setup.py reads
# both requirements files; constraints.txt pins every transitive package, as in .venv.
COPY requirements.txt requirements-dev.txt requirements-vertex.txt constraints.txt setup.py ./
RUN python3 -m pip install -c constraints.txt -r requirements.txt -r requirements-vertex.txt

COPY objrec/ objrec/
COPY preprocessing/ preprocessing/
COPY trainer/ trainer/
COPY serving/ serving/
COPY batch_predict/ batch_predict/
RUN python3 -m pip install --no-deps -c constraints.txt . \
 && python3 -m pip check \
 && python3 -c "import apache_beam, tensorflow as tf; \
assert tf.__version__ == '${TF_VERSION}', 'TensorFlow ' + tf.__version__; \
assert apache_beam.__version__ == '${BEAM_VERSION}', 'Beam ' + apache_beam.__version__" \
 && objrec-train --help > /dev/null \
 && objrec-preprocess --help > /dev/null \
 && objrec-predict --help > /dev/null

# Kubernetes runs the trainer as this user (k8s/training/: runAsUser 10001, read-only root file
# system, HOME on an emptyDir). The image's default user stays root, like Beam's own SDK images:
# on Dataflow, `boot` installs staged packages into the system Python.
RUN useradd --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin objrec

ENTRYPOINT ["/opt/apache/beam/boot"]
