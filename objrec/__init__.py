"""objrec: labelled image folders to a classifier served by TensorFlow Serving."""

__version__ = "0.1.0"
