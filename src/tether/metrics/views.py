"""The Django view that serves the metrics to Prometheus: ``metrics_view``.

tether does not mount it: the project adds it to its URLs and protects it as it sees fit (Prometheus scrapes without
a session, so an IP allow-list or a reverse proxy rule is the usual choice; docs/observability.md shows both that
and a staff check).
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, HttpResponseNotFound
from django.views.decorators.http import require_safe

from tether import metrics

__all__ = ["metrics_view"]


@require_safe
def metrics_view(request: HttpRequest) -> HttpResponse:
    """Every metric in Prometheus's text format: this process's, or every process's in multiprocess mode.

    Answers 404 while ``TETHER_METRICS`` is off, saying so, rather than an empty page that would look like a
    process with nothing to report.
    """
    if not metrics.enabled():
        return HttpResponseNotFound(
            "tether's metrics are off: set TETHER_METRICS = True (and install django-tether[metrics]).\n",
            content_type="text/plain; charset=utf-8",
        )
    from tether.metrics.export import CONTENT_TYPE_LATEST, render

    metrics.flush()
    return HttpResponse(render(), content_type=CONTENT_TYPE_LATEST)
