"""An OpenTelemetry SDK set-up for the processes a tracing test starts (``SGM_TEST_TRACE_FILE``).

Each process records its spans with the SDK and writes each one, as it ends, as a JSON line to the
same file (a line is one ``write`` on a file opened for appending), so a test reads one trace across
the web process and the worker.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult


class FileSpanExporter(SpanExporter):
    def __init__(self, path: str) -> None:
        self.path = path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with open(self.path, "a") as out:
            for s in spans:
                context = s.get_span_context()
                assert context is not None
                out.write(json.dumps({
                    "name": s.name, "trace_id": f"{context.trace_id:032x}", "span_id": f"{context.span_id:016x}",
                    "parent_id": f"{s.parent.span_id:016x}" if s.parent is not None else None,
                    "kind": s.kind.name, "pid": os.getpid(), "attributes": dict(s.attributes or {}),
                }) + "\n")
        return SpanExportResult.SUCCESS


def configure(path: str) -> None:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(FileSpanExporter(path)))
    trace.set_tracer_provider(provider)
