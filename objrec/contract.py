"""The names every stage relies on: file layout, TFRecord features, SavedModel signatures.

Preprocessing writes them, the trainer and the exported model read them, the serving client
asks for them. Each name has exactly one spelling, here; docs/contracts.md says what each
means.
"""

SCHEMA_VERSION = 1

# Dataset directory (preprocessing output, trainer input).
SPLITS = ("train", "validation", "test")
TRAIN, VALIDATION, TEST = SPLITS
# Every name a split goes by, in folders, manifests and --split: its own, and `val`.
SPLIT_NAMES = {**{split: split for split in SPLITS}, "val": VALIDATION}
LABELS_FILE = "labels.txt"
METADATA_FILE = "metadata.json"
REJECTED_PREFIX = "rejected"
DUPLICATES_PREFIX = "duplicates"
LOG_SUFFIX = ".jsonl"
TFRECORD_SUFFIX = ".tfrecord"
IMAGE_FORMAT = "jpeg"
RESIZE_MODES = ("shorter_side", "crop", "pad", "stretch")
DEFAULT_IMAGE_SIZE = 256
DEFAULT_RESIZE_MODE = "shorter_side"


def shard_file_name(split: str, index: int, num_shards: int) -> str:
    """`train-00003-of-00016.tfrecord`: the name of one shard of a split."""
    return f"{split}-{index:05d}-of-{num_shards:05d}{TFRECORD_SUFFIX}"


# tf.train.Example features of one stored image.
FEATURE_ENCODED = "image/encoded"
FEATURE_FORMAT = "image/format"
FEATURE_HEIGHT = "image/height"
FEATURE_WIDTH = "image/width"
FEATURE_LABEL = "image/class/label"
FEATURE_LABEL_TEXT = "image/class/text"
FEATURE_SOURCE = "image/source"
FEATURE_SHA256 = "image/sha256"

# metadata.json keys.
META_SCHEMA_VERSION = "schema_version"
META_LABELS = "labels"
META_NUM_CLASSES = "num_classes"
META_IMAGE_SIZE = "image_size"
META_RESIZE_MODE = "resize_mode"
META_NUM_INPUTS = "num_inputs"
META_NUM_REJECTED = "num_rejected"
META_NUM_DUPLICATES = "num_duplicates"
META_SPLITS = "splits"
META_NUM_EXAMPLES = "num_examples"
META_CLASS_COUNTS = "class_counts"
META_FILES = "files"
META_JPEG_QUALITY = "jpeg_quality"
META_NUM_LABEL_CONFLICTS = "num_label_conflicts"
META_REJECTED_REASONS = "rejected_reasons"
META_CONFIG = "config"
META_INPUT_LAYOUT = "input_layout"  # class_folders, split_folders or manifest

# Entries of rejected-*.jsonl and duplicates-*.jsonl.
LOG_URI = "uri"
LOG_REASON = "reason"
LOG_DETAIL = "detail"
LOG_DUPLICATE_OF = "duplicate_of"
LOG_LABEL = "label"


def log_file_name(prefix: str) -> str:
    """`rejected-00000-of-00001.jsonl`: the one file of the rejected or duplicates log."""
    return f"{prefix}-00000-of-00001{LOG_SUFFIX}"


# Job directory (trainer output).
EXPORT_DIR = "export"
EVAL_DIR = "eval"
LOGS_DIR = "logs"
CHECKPOINTS_DIR = "checkpoints"
BACKUP_DIR = "backup"
METRICS_FILE = "metrics.json"
RUN_FILE = "run.json"
CONFIG_FILE = "config.json"
FINAL_WEIGHTS = "final"  # JOB_DIR/checkpoints/final: the trained (early-stopping best) weights
HISTORY_FILE = "history.json"  # JOB_DIR/eval/history.json: one record per epoch
TRAINING_CURVES_PICTURE = "training_curves.png"  # JOB_DIR/eval/...
CONFUSION_MATRIX_PICTURE = "confusion_matrix.png"
SAMPLE_PREDICTIONS_PICTURE = "sample_predictions.png"
EVAL_PICTURES = (TRAINING_CURVES_PICTURE, CONFUSION_MATRIX_PICTURE, SAMPLE_PREDICTIONS_PICTURE)
REPORT_FILE = "report.html"  # JOB_DIR/eval/report.html, DATASET_DIR/report.html

# eval/metrics.json keys (the client's --evaluate prints the same, without top_k and split).
METRIC_NUM_EXAMPLES = "num_examples"
METRIC_ACCURACY = "accuracy"
METRIC_PRECISION_MACRO = "precision_macro"
METRIC_RECALL_MACRO = "recall_macro"
METRIC_F1_MACRO = "f1_macro"
METRIC_PER_CLASS = "per_class"  # label -> {precision, recall, f1, support}
METRIC_PRECISION = "precision"
METRIC_RECALL = "recall"
METRIC_F1 = "f1"
METRIC_SUPPORT = "support"
METRIC_CONFUSION_MATRIX = "confusion_matrix"  # rows true classes, columns predicted
METRIC_LABELS = "labels"
METRIC_TOP_K = "top_k"
METRIC_TOP_K_ACCURACY = "top_k_accuracy"
METRIC_SPLIT = "split"  # the split evaluated: test, else validation
METRIC_NUM_INVALID = "num_invalid"  # the client's: images the served model could not decode

# SavedModel signatures.
DEFAULT_MODEL_NAME = "objrec"
SERVING_SIGNATURE = "serving_default"
PIXELS_SIGNATURE = "images"
INPUT_IMAGE_BYTES = "image_bytes"
INPUT_IMAGES = "images"
OUTPUT_PROBABILITIES = "probabilities"
OUTPUT_TOP_K_CLASSES = "top_k_classes"
OUTPUT_TOP_K_SCORES = "top_k_scores"
OUTPUT_TOP_K_CLASS_IDS = "top_k_class_ids"
OUTPUT_VALID = "valid"
MAX_TOP_K = 5
WARMUP_FILE = "tf_serving_warmup_requests"
ASSETS_EXTRA_DIR = "assets.extra"

# TF Serving's gRPC API: its default port, services and the message size objrec's server
# and client accept by default (a batch of 16 photos of 4 MB each).
DEFAULT_GRPC_PORT = 8500
PREDICTION_SERVICE = "tensorflow.serving.PredictionService"
MODEL_SERVICE = "tensorflow.serving.ModelService"
MIB = 1024 * 1024
DEFAULT_MAX_MESSAGE_BYTES = 64 * MIB


def top_k_for(num_classes: int) -> int:
    """K of the exported top-k outputs: min(5, num_classes), fixed at export."""
    return min(MAX_TOP_K, num_classes)
