"""The SavedModel contract, one home for both sides of it.

What an objrec export holds and how it is published, used by the trainer to write it and by
the development server and the client to read it; neither side imports the other:

- `signatures`: the `serving_default` (encoded files) and `images` (pixels) signatures;
- `decode`: the in-graph decode of raw files, and the evaluation view training shares;
- `warmup`: `assets.extra/tf_serving_warmup_requests` records;
- `tensors`: TensorProto <-> ndarray helpers for requests and answers;
- `versions`: integer version directories and atomic publishing.
"""
