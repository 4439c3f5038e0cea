"""An OpenTelemetry span exporter that appends each finished span to a file, one JSON object a line, so that a test
can read the spans of a server running in another process (``PROJECT_TRACING_FILE``)."""

import json
import threading

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult


def _ids(context):
    return {"trace_id": format(context.trace_id, "032x"), "span_id": format(context.span_id, "016x")}


class JsonLinesSpanExporter(SpanExporter):
    """Writes each span's name, kind, ids, parent, links and attributes; flushed at once, so a line is readable as
    soon as its span has ended (the simple processor exports spans one by one as they end)."""

    def __init__(self, path):
        self.path = path
        self.lock = threading.Lock()

    def export(self, spans):
        lines = []
        for span in spans:
            record = {
                "name": span.name,
                "kind": span.kind.name,
                **_ids(span.context),
                "parent_span_id": format(span.parent.span_id, "016x") if span.parent else None,
                "links": [_ids(link.context) for link in span.links],
                "attributes": dict(span.attributes or {}),
            }
            lines.append(json.dumps(record) + "\n")
        with self.lock, open(self.path, "a", encoding="utf-8") as file:
            file.writelines(lines)
        return SpanExportResult.SUCCESS

    def shutdown(self):
        pass


def install(path):
    """Make a tracer provider exporting to ``path`` the global one (every span sampled)."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(JsonLinesSpanExporter(path)))
    trace.set_tracer_provider(provider)
