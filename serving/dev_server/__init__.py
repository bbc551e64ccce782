"""The development model server: a stand-in for TF Serving on a laptop, in tests and in the demo.

It speaks TF Serving's gRPC and REST APIs over the same SavedModel layout and config files
(`objrec-serve`, `python -m serving.dev_server`). Production runs TF Serving itself
(`k8s/`); this package is never deployed.
"""
