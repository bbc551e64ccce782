"""objrec-batch-predict: the exported model over a folder, a bucket or a manifest (Apache Beam).

The job runs the SavedModel's `serving_default` signature, the graph TF Serving runs, on each
file's raw bytes, so batch and online predictions cannot differ. Every input is one line of
the output, a prediction or the reason there is none.
"""
