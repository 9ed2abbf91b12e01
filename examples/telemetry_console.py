"""chat-state's OpenTelemetry spans and metrics, printed to the console.

Needs the ``otel`` extra and the OpenTelemetry SDK (the application's choice of
exporter): ``pip install "chat-state[otel]" opentelemetry-sdk``.

Run it: ``uv run python examples/telemetry_console.py [URL]`` (default ``memory://``).
"""

from __future__ import annotations

import sys

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, PeriodicExportingMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

from chat_state import State, telemetry


def main(url: str) -> None:
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    # Exported once, at shutdown below (a service would export every minute or so).
    reader = PeriodicExportingMetricReader(ConsoleMetricExporter(), export_interval_millis=3.6e6)
    meter_provider = MeterProvider(metric_readers=[reader])
    # Usually: telemetry.instrument() once at start-up, with the global providers.
    telemetry.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
    try:
        with State.from_url(url, key_prefix="demo-bot") as state:
            state.subscribe("slack:C1:1700000000.1")
            # The value, the thread id and the lock's token appear in no span or metric.
            state.set_if_not_exists("dedupe:event-1", {"secret": "s3cr3t-value"}, ttl_ms=60_000)
            with state.lock("slack:C1:1700000000.1", ttl_ms=10_000):
                state.append_to_list("history:slack:C1:1700000000.1", {"text": "hello"})
            print(f"health: ok={state.health().ok}", file=sys.stderr)
    finally:
        telemetry.uninstrument()
        tracer_provider.shutdown()
        meter_provider.shutdown()  # exports the metrics


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "memory://")
