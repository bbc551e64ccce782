"""The job's Beam counters and its rejected-file side output, shared by every step.

Counters (namespace `objrec.preprocessing`), each equal to a metadata.json count after a run:

| counter | metadata.json |
| --- | --- |
| `inputs_read` | `num_inputs` |
| `rejected_<reason>` | `rejected_reasons[<reason>]` (their sum: `num_rejected`) |
| `duplicates` | `num_duplicates` |
| `label_conflicts` | `num_label_conflicts` |
| `examples_written_<split>` | `splits[<split>].num_examples` |
| `images_decoded` | (records and duplicates before de-duplication: progress only) |

A runner shows them while the job runs (the Dataflow console's "Custom counters"), long
before metadata.json exists.
"""

import collections
import threading

from apache_beam import pvalue
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.runners.runner import PipelineResult

from objrec import contract
from preprocessing import report

METRICS_NAMESPACE = "objrec.preprocessing"
INPUTS_READ = "inputs_read"
DUPLICATES = "duplicates"
LABEL_CONFLICTS = "label_conflicts"
IMAGES_DECODED = "images_decoded"
# Tag of the side output that carries rejected-log entries.
REJECTED = "rejected"


def rejected_counter(reason: str) -> str:
    """`rejected_truncated`: the counter of one rejection reason."""
    return f"rejected_{reason}"


def written_counter(split: str) -> str:
    """`examples_written_train`: the counter of records written to one split."""
    return f"examples_written_{split}"


# The counters as this process has seen them, for a local run's progress display: the
# in-process runner runs every step here (Dataflow's workers keep copies no one reads).
_local_counts: collections.Counter = collections.Counter()
_local_lock = threading.Lock()


def increment(name: str, value: int = 1) -> None:
    """Adds `value` to the job counter `name`."""
    Metrics.counter(METRICS_NAMESPACE, name).inc(value)
    with _local_lock:
        _local_counts[name] += value


def local_counts() -> dict[str, int]:
    """What this process has counted so far (a bundle that is retried counts twice)."""
    with _local_lock:
        return dict(_local_counts)


def reset_local_counts() -> None:
    with _local_lock:
        _local_counts.clear()


def rejected_output(entry: dict, times: int = 1) -> pvalue.TaggedOutput:
    """A rejected-log entry for `times` input rows on the REJECTED output (a report.Logged),
    counted per reason."""
    increment(rejected_counter(entry[contract.LOG_REASON]), times)
    return pvalue.TaggedOutput(REJECTED, report.Logged(entry, times))


def job_counters(result: PipelineResult) -> dict[str, int]:
    """The job's counters of a finished run, by name (committed values: retries not counted)."""
    query = result.metrics().query(MetricsFilter().with_namespace(METRICS_NAMESPACE))
    counters: dict[str, int] = {}
    for counter in query["counters"]:
        # One entry per step that uses the name: a reason can be found in several steps.
        name = counter.key.metric.name
        counters[name] = counters.get(name, 0) + counter.committed
    return counters
