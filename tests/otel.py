"""The OpenTelemetry SDK's in-memory exporter and reader, for tests that read back
what :mod:`chat_state.telemetry` recorded."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from chat_state import telemetry


@dataclass
class Recorded:
    spans: InMemorySpanExporter
    metrics: InMemoryMetricReader
    tracer_provider: TracerProvider

    def finished(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())

    def points(self, name: str) -> list[tuple[dict[str, Any], Any]]:
        """(attributes, value or count) of every data point of the metric ``name``."""
        data = self.metrics.get_metrics_data()
        found: list[tuple[dict[str, Any], Any]] = []
        for resource in data.resource_metrics if data else []:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        for point in metric.data.data_points:
                            value = getattr(point, "value", None) or getattr(point, "count", 0)
                            found.append((dict(point.attributes or {}), value))
        return found

    def histogram(self, name: str) -> tuple[int, float]:
        """(count, sum) of every recording of the histogram ``name``."""
        data = self.metrics.get_metrics_data()
        counts: list[int] = []
        sums: list[float] = []
        for resource in data.resource_metrics if data else []:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        for point in metric.data.data_points:
                            assert isinstance(point, HistogramDataPoint), name
                            counts.append(point.count)
                            sums.append(point.sum)
        return sum(counts), sum(sums)

    def total(self, name: str, attributes: dict[str, Any]) -> Any:
        """The sum of the metric ``name``'s points that have ``attributes``."""
        found = self.points(name)
        return sum(value for point, value in found if attributes.items() <= point.items())


@pytest.fixture
def recorded() -> Iterator[Recorded]:
    spans, reader = InMemorySpanExporter(), InMemoryMetricReader()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    telemetry.instrument(tracer_provider, MeterProvider(metric_readers=[reader]))
    try:
        yield Recorded(spans, reader, tracer_provider)
    finally:
        telemetry.uninstrument()
