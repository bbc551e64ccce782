"""`pip install -c constraints.txt -e ".[dev]"` (the README's route outside Debian) is the same
install as scripts/setup_env.sh's: the same requirement files, every package pinned."""

import re

from tests import REPO


def requirements(name: str) -> list[str]:
    lines = (REPO / name).read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_the_dev_extra_is_requirements_dev_txt_and_the_runtime_requirements_txt():
    setup = (REPO / "setup.py").read_text()
    assert 'install_requires=read_requirements("requirements.txt")' in setup
    assert '"dev": read_requirements("requirements-dev.txt")' in setup
    script = (REPO / "scripts" / "setup_env.sh").read_text()
    assert "-c constraints.txt -r requirements.txt -r requirements-dev.txt" in script
    assert 'pip install -c constraints.txt -e ".[dev]"' in (REPO / "README.md").read_text()


def test_every_requirement_is_pinned_and_agrees_with_constraints():
    constraints = dict(line.split("==", 1) for line in requirements("constraints.txt"))
    for name in ("requirements.txt", "requirements-dev.txt", "requirements-vertex.txt"):
        for line in requirements(name):
            package, version = line.split("==", 1)
            package = re.sub(r"\[.*\]", "", package)
            assert constraints.get(package) == version, (name, line)
