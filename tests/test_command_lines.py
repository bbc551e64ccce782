"""Every command answers --help and usage errors before TensorFlow or Beam loads."""

import subprocess
import sys

import pytest

from tests import REPO

# How each console script of setup.py starts: the module and the call it makes.
COMMANDS = {
    "objrec-preprocess": ("preprocessing.cli", "main()"),
    "objrec-train": ("trainer.task", "sys.exit(main(sys.argv[1:]))"),
    "objrec-serve": ("serving.dev_server.cli", "main()"),
    "objrec-predict": ("serving.client.cli", "main()"),
    "objrec-batch-predict": ("batch_predict.cli", "main()"),
}
HEAVY = ("tensorflow", "keras", "apache_beam", "grpc")

PROBE = """
import atexit, sys
sys.argv = [{name!r}, *{argv!r}]
atexit.register(lambda: print("LOADED", *sorted(m for m in {heavy!r} if m in sys.modules)))
from {module} import main
{call}
"""


def run_command(name: str, argv: list[str]) -> subprocess.CompletedProcess:
    module, call = COMMANDS[name]
    source = PROBE.format(name=name, argv=argv, heavy=HEAVY, module=module, call=call)
    return subprocess.run([sys.executable, "-c", source], cwd=REPO, capture_output=True,
                          text=True, timeout=120)  # fmt: skip


def test_every_console_script_is_probed():
    setup = (REPO / "setup.py").read_text()
    for name, (module, _) in COMMANDS.items():
        assert f'"{name}={module}:main"' in setup


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_help_answers_without_loading_tensorflow_or_beam(name):
    result = run_command(name, ["--help"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: {name}")
    assert result.stdout.strip().endswith("LOADED"), result.stdout[-300:]
    assert result.stderr == ""


@pytest.mark.parametrize(
    "name, argv, message",
    [
        ("objrec-preprocess", ["--input", "images"], "required: --output"),
        ("objrec-train", ["--data_dir", "d", "--batch_size", "many"], "--batch_size: invalid int"),
        ("objrec-serve", ["--port", "x"], "--port: invalid int value"),
        ("objrec-predict", ["--top_k", "x"], "--top_k: invalid int value"),
        ("objrec-batch-predict", ["--model_dir", "m", "--input", "i"], "required: --output"),
    ],
)
def test_a_usage_error_is_one_line_before_tensorflow_or_beam_loads(name, argv, message):
    result = run_command(name, argv)
    assert result.returncode == 2
    assert message in result.stderr.splitlines()[-1]
    assert result.stdout.strip() == "LOADED"


def parsers() -> dict:
    from batch_predict import config as batch_predict_config
    from preprocessing import config as preprocess_config
    from serving.client import cli as predict_cli
    from serving.dev_server import cli as serve_cli
    from trainer import flags as train_flags

    return {
        "objrec-preprocess": preprocess_config.build_parser(),
        "objrec-train": train_flags.build_parser(),
        "objrec-serve": serve_cli.build_parser(),
        "objrec-predict": predict_cli.build_parser(),
        "objrec-batch-predict": batch_predict_config.build_parser(),
    }


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_flag_has_help_with_its_default_and_choices(name):
    parser = parsers()[name]
    for action in parser._actions:
        if not action.option_strings or action.dest == "help":
            continue
        text = parser.format_help()
        assert action.help, f"{name} {action.option_strings[0]} has no help"
        if action.default not in (None, "", False, []) and not action.required:
            # The flag's own entry: from its line to the next flag's.
            entry = text.split(f"\n  {action.option_strings[0]}", 1)[1].split("\n  -", 1)[0]
            assert "default" in entry, (name, action.option_strings[0])
        if action.choices:
            assert "{" + ",".join(map(str, action.choices)) + "}" in text
