"""`python -m serving.dev_server`: the same command as `objrec-serve`."""

from serving.dev_server import cli

cli.main()
