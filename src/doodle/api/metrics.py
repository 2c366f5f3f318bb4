"""Prometheus metrics of the backend; the design's five names are public API."""

from typing import Literal, get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Who labelled a saved drawing: a person on the drawing page, its game (the label is the prompt), or an API client.
FeedbackSource = Literal["ui", "game", "api"]
FEEDBACK_OUTCOMES = ("agreed", "corrected")

LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
CONFIDENCE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)


class ApiMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.prediction_requests = Counter(
            "model_prediction_requests", "Prediction requests received", registry=registry
        )
        self.prediction_latency = Histogram(
            "model_prediction_latency_seconds",
            "Time to answer a prediction request",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.save_requests = Counter("save_image_requests", "Save-image requests received", registry=registry)
        self.save_latency = Histogram(
            "save_image_latency_seconds",
            "Time to answer a save-image request",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        # status is the exact code (400, 413, 503, ...): the app answers a dozen at most, and alerts pick 5xx.
        self.errors = Counter(
            "api_errors", "Requests answered with an error", ["endpoint", "status"], registry=registry
        )
        self.predictions = Counter(
            "doodle_predictions", "Images classified, by top label", ["category"], registry=registry
        )
        self.confidence = Histogram(
            "doodle_prediction_confidence",
            "Probability of the top label",
            buckets=CONFIDENCE_BUCKETS,
            registry=registry,
        )
        self.batch_size = Histogram(
            "doodle_model_batch_size",
            "Images per model-server call (concurrent requests share calls)",
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.saved = Counter("doodle_drawings_saved", "Labelled drawings stored", registry=registry)
        # outcome: did the saved label agree with the served model's first guess for that drawing?
        self.feedback = Counter(
            "doodle_feedback",
            "Saved drawings, by whether the label agreed with the served model's top-1",
            ["outcome", "model_version", "source"],
            registry=registry,
        )
        self.model_version = Gauge(
            "doodle_served_model_version", "Registry version of the model that answered last", registry=registry
        )

        self._feedback_versions: set[str] = set()

    def record_prediction(self, label: str, probability: float, model_version: str) -> None:
        self.predictions.labels(category=label).inc()
        self.confidence.observe(probability)
        if model_version.isdigit():
            self.model_version.set(int(model_version))
        self._start_feedback_series(model_version)

    def record_feedback(self, outcome: str, model_version: str, source: FeedbackSource) -> None:
        self._start_feedback_series(model_version)
        self.feedback.labels(outcome=outcome, model_version=model_version, source=source).inc()

    def _start_feedback_series(self, model_version: str) -> None:
        """Export a version's feedback series at 0 as soon as it answers: Prometheus's increase() misses
        what a series counted before its first scrape."""
        if model_version in self._feedback_versions:
            return
        self._feedback_versions.add(model_version)
        for outcome in FEEDBACK_OUTCOMES:
            for source in get_args(FeedbackSource):
                self.feedback.labels(outcome=outcome, model_version=model_version, source=source)
