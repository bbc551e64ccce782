"""`python -m serving.client`: the same command as `objrec-predict`."""

from serving.client import cli

cli.main()
