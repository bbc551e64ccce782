"""The objrec distribution: preprocessing, trainer and serving, with their console scripts.

Dataflow workers install it with `--setup_file ./setup.py`; the training image with `pip install .`.
"""

import pathlib

import setuptools

HERE = pathlib.Path(__file__).parent


def read_requirements(name: str) -> list[str]:
    lines = (HERE / name).read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


setuptools.setup(
    name="objrec",
    version="0.1.0",
    description="Labelled image folders to an image classifier served by TensorFlow Serving.",
    python_requires=">=3.10",
    packages=setuptools.find_packages(
        include=[
            "objrec",
            "objrec.*",
            "preprocessing",
            "trainer",
            "serving",
            "serving.*",
            "batch_predict",
        ]
    ),
    install_requires=read_requirements("requirements.txt"),
    extras_require={
        "dev": read_requirements("requirements-dev.txt"),
        "vertex": read_requirements("requirements-vertex.txt"),
    },
    entry_points={
        "console_scripts": [
            "objrec-preprocess=preprocessing.cli:main",
            "objrec-train=trainer.task:main",
            "objrec-serve=serving.dev_server.cli:main",
            "objrec-predict=serving.client.cli:main",
            "objrec-batch-predict=batch_predict.cli:main",
        ]
    },
)
