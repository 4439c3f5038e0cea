"""Static files served by Django itself, so that a bare ``uvicorn chatsite.asgi:application`` serves the whole site.

Django's own ``staticfiles`` view only works with DEBUG on and streams files through a synchronous iterator, which
its ASGI handler warns about. The example's files are small: this view finds one with the staticfiles finders
(tether's ``tether.js`` included), reads it whole and answers with a plain response. A deployment serves static
files from a web server or a CDN instead (``CHAT_SERVE_STATIC = False``).
"""

from __future__ import annotations

import mimetypes
import posixpath
from pathlib import Path

from django.contrib.staticfiles import finders
from django.http import Http404, HttpRequest, HttpResponse
from django.utils.http import http_date

__all__ = ["serve_static"]

#: Files larger than this are not served by this view (the example has none).
MAX_STATIC_BYTES = 2 * 1024 * 1024


def serve_static(request: HttpRequest, path: str) -> HttpResponse:
    """Answer ``GET /static/<path>`` with the file the staticfiles finders find for ``path``, or 404."""
    normalized = posixpath.normpath(path).lstrip("/")
    if normalized.startswith("..") or not normalized:
        raise Http404("No such static file.")
    found = finders.find(normalized)
    if not found:
        raise Http404(f"No static file {normalized!r}.")
    file = Path(found)
    stat = file.stat()
    if stat.st_size > MAX_STATIC_BYTES:
        raise Http404(f"{normalized!r} is too large for this development view.")
    content_type, encoding = mimetypes.guess_type(str(file))
    response = HttpResponse(file.read_bytes(), content_type=content_type or "application/octet-stream")
    if encoding:
        response.headers["Content-Encoding"] = encoding
    response.headers["Last-Modified"] = http_date(stat.st_mtime)
    response.headers["Cache-Control"] = "no-cache"
    return response
