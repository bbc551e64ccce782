"""The walls between packages, read from the import graph (scripts/import_graph.py)."""

import importlib.util
import subprocess

import pytest

from tests import REPO


def load_import_graph():
    spec = importlib.util.spec_from_file_location(
        "import_graph", REPO / "scripts" / "import_graph.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


import_graph = load_import_graph()
GRAPH = import_graph.module_graph()


def imports_between(source_prefix: str, target_prefix: str) -> list[str]:
    return [
        f"{source} -> {target}"
        for source, targets in GRAPH.items()
        for target in targets
        if source.startswith(source_prefix) and target.startswith(target_prefix)
    ]


def test_the_graph_sees_every_package_and_their_imports():
    # A graph that missed modules or imports would make every wall below hold trivially.
    for module in ("trainer.train", "objrec.savedmodel.signatures", "serving.client.cli",
                   "serving.dev_server.server", "preprocessing.pipeline",
                   "batch_predict.pipeline"):  # fmt: skip
        assert module in GRAPH
    assert "objrec.savedmodel.signatures" in GRAPH["trainer.export"]
    assert "serving.client.commands" in GRAPH["serving.client.cli"]
    assert "serving.client.library" in GRAPH["serving.client.commands"]
    assert "objrec.contract" in GRAPH["serving.dev_server.servable"]


@pytest.mark.parametrize(
    "source, target",
    [
        ("trainer", "serving"),
        ("serving", "trainer"),
        ("serving.client", "serving.dev_server"),
        ("serving.dev_server", "serving.client"),
        ("objrec", "trainer"),
        ("objrec", "serving"),
        ("objrec", "preprocessing"),
        ("preprocessing", "trainer"),
        ("preprocessing", "serving"),
        ("preprocessing", "batch_predict"),
        ("batch_predict", "trainer"),
        ("batch_predict", "serving"),
        ("trainer", "batch_predict"),
        ("serving", "batch_predict"),
        ("objrec", "batch_predict"),
    ],
)
def test_no_module_imports_across_the_wall(source, target):
    assert imports_between(source, target) == []


def test_no_two_product_modules_import_each_other():
    assert import_graph.cycles(GRAPH) == []


def test_a_cycle_is_found_when_there_is_one():
    assert import_graph.cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [
        ["a", "b", "c"]
    ]


def test_no_file_refers_to_a_document_outside_the_repository():
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    outside = "DESIGN" + ".md"  # spelled apart so that this file does not match itself
    referring = [
        path
        for path in tracked
        if (REPO / path).is_file() and outside in (REPO / path).read_text(errors="replace")
    ]
    assert referring == []
