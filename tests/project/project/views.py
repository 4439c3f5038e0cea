"""The test project's views. The autoreload test rewrites GREETING in a copy of this file."""

import functools

from asgiref.sync import async_to_sync
from django.contrib.auth.models import User
from django.http import HttpResponse, HttpResponseForbidden

from tether.layers import get_channel_layer

GREETING = "hello from the tether test project"


def index(request):
    return HttpResponse(GREETING)


def user_count(request):
    return HttpResponse(str(User.objects.count()))


def broadcast(request, group):
    """Send a ``news`` event to ``group`` from a plain Django view, as a project announces a change."""
    async_to_sync(get_channel_layer().group_send)(group, {"type": "news", "text": request.GET.get("text", "news")})
    return HttpResponse("sent")


def allow_ips(addresses):
    """Refuse (403) requests from any address but ``addresses``: docs/observability.md's allow-list for /metrics."""
    allowed = frozenset(addresses)

    def decorate(view):
        @functools.wraps(view)
        def guarded(request, *args, **kwargs):
            if request.META.get("REMOTE_ADDR") not in allowed:
                return HttpResponseForbidden("Metrics are not served to this address.\n")
            return view(request, *args, **kwargs)

        return guarded

    return decorate
