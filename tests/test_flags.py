"""objrec.flags: one spelling of a boolean flag value for every command."""

import argparse

import pytest

from objrec.flags import parse_bool
from serving.dev_server import cli as server_cli
from trainer import flags as train_flags


@pytest.mark.parametrize(
    "text, value",
    [("true", True), ("1", True), ("Yes", True), ("on", True),
     ("false", False), ("0", False), ("NO", False), ("off", False)],
)  # fmt: skip
def test_boolean_words(text, value):
    assert parse_bool(text) is value


def test_anything_else_is_refused_with_the_value_named():
    with pytest.raises(argparse.ArgumentTypeError, match="expected true or false, got 'maybe'"):
        parse_bool("maybe")


@pytest.mark.parametrize("text, value", [("off", False), ("on", True), ("false", False)])
def test_train_and_serve_read_the_same_words(text, value, tmp_path):
    config = train_flags.parse_flags(
        ["--data_dir", "d", "--job_dir", str(tmp_path), "--cache", text]
    )
    assert config.cache is value
    served = server_cli.parse_args(
        ["--model_base_path", str(tmp_path), "--enable_model_warmup", text]
    )
    assert served.enable_model_warmup is value
