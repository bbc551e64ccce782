"""`python -m batch_predict`: the same as `objrec-batch-predict`."""

from batch_predict.cli import main

main()
