"""The server's Prometheus metrics under TF Serving's names, labels and buckets.

TF Serving exports its `tensorflow::monitoring` metrics with `/` turned into `:`
(util/prometheus_exporter.cc), so `/tensorflow/serving/request_count` is scraped as
`:tensorflow:serving:request_count`. The ones kept here, with TF Serving's labels:

    :tensorflow:serving:request_count           model_name, status       every request
    :tensorflow:serving:request_latency         model_name, API, entrypoint  (µs, on success)
    :tensorflow:serving:runtime_latency         model_name, API, runtime     (µs, Session::Run)
    :tensorflow:serving:batching_session:...    processed_batch_size, input_batch_size,
                                                padding_size, queuing_latency, wrapped_run_count

Dashboards and alerts written against TF Serving therefore work on this server unchanged.
"""

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

_PREFIX = ":tensorflow:serving:"
_BATCHING_PREFIX = _PREFIX + "batching_session:"


def exponential_buckets(scale: float, growth: float, count: int) -> list[float]:
    """`tensorflow::monitoring::Buckets::Exponential(scale, growth, count)`; +Inf is added."""
    return [scale * growth**index for index in range(count)]


# TF Serving's buckets: latencies from 10 µs by x1.8 (~20 minutes), batch sizes by powers of 2,
# queuing from 100 µs by x1.2 (~1 s).
LATENCY_BUCKETS = exponential_buckets(10, 1.8, 33)
BATCH_SIZE_BUCKETS = exponential_buckets(1, 2, 14)
QUEUING_BUCKETS = exponential_buckets(100, 1.2, 52)
MICROS = 1e6


class _TFServingNames(Collector):
    """Exports a registry's metrics under TF Serving's exact sample names.

    prometheus_client writes every counter as NAME_total (the OpenMetrics rule), and TF
    Serving's counters have no such suffix; so counters are exported as untyped series named
    exactly as TF Serving names them. The `_created` series, which TF Serving has not, are
    left out.
    """

    def __init__(self, registry: CollectorRegistry):
        self._registry = registry

    def collect(self):
        for family in self._registry.collect():
            metric_type = "unknown" if family.type == "counter" else family.type
            exported = Metric(family.name, family.documentation, metric_type)
            for sample in family.samples:
                if sample.name.endswith("_created"):
                    continue
                name = family.name if family.type == "counter" else sample.name
                exported.add_sample(name, sample.labels, sample.value)
            yield exported


class ServerMetrics:
    """The metrics one server records, and their Prometheus text page."""

    def __init__(self):
        self._values = CollectorRegistry(auto_describe=True)
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_TFServingNames(self._values))
        values = self._values
        self.request_count = Counter(
            _PREFIX + "request_count",
            "The total number of requests.",
            ["model_name", "status"],
            registry=values,
        )
        self.request_latency = Histogram(
            _PREFIX + "request_latency",
            "Distribution of wall time (in microseconds) for Tensorflow Serving request.",
            ["model_name", "API", "entrypoint"],
            buckets=LATENCY_BUCKETS,
            registry=values,
        )
        self.runtime_latency = Histogram(
            _PREFIX + "runtime_latency",
            "Distribution of wall time (in microseconds) for Tensorflow runtime.",
            ["model_name", "API", "runtime"],
            buckets=LATENCY_BUCKETS,
            registry=values,
        )
        self.processed_batch_size = Histogram(
            _BATCHING_PREFIX + "processed_batch_size",
            "Tracks the batch size distribution on processing.",
            buckets=BATCH_SIZE_BUCKETS,
            registry=values,
        )
        self.input_batch_size = Histogram(
            _BATCHING_PREFIX + "input_batch_size",
            "Tracks the batch size distribution on the inputs.",
            buckets=BATCH_SIZE_BUCKETS,
            registry=values,
        )
        self.padding_size = Histogram(
            _BATCHING_PREFIX + "padding_size",
            "Tracks the padding size distribution on batches.",
            ["execution_batch_size"],
            buckets=BATCH_SIZE_BUCKETS,
            registry=values,
        )
        self.queuing_latency = Histogram(
            _BATCHING_PREFIX + "queuing_latency",
            "Distribution of wall time spent (in microseconds) in queuing",
            ["thread_pool_name"],
            buckets=QUEUING_BUCKETS,
            registry=values,
        )
        self.wrapped_run_count = Counter(
            _BATCHING_PREFIX + "wrapped_run_count",
            "Total count of run calls on the wrapped session",
            registry=values,
        )

    def record_request(
        self, model_name: str, api: str, entrypoint: str, status: str, seconds: float
    ) -> None:
        """One finished request: its count by status, and its latency when it succeeded."""
        self.request_count.labels(model_name, status).inc()
        if status == "OK":
            self.request_latency.labels(model_name, api, entrypoint).observe(seconds * MICROS)

    def record_runtime(self, model_name: str, seconds: float) -> None:
        """One Session::Run of a Predict (TF Serving's `runtime="TF1"`)."""
        self.runtime_latency.labels(model_name, "Predict", "TF1").observe(seconds * MICROS)

    def page(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
