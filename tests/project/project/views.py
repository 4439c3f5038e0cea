"""The test project's views. The autoreload test rewrites GREETING in a copy of this file."""

import functools

from django.contrib.auth.models import User
from django.http import HttpResponse, HttpResponseForbidden

GREETING = "hello from the tether test project"


def index(request):
    return HttpResponse(GREETING)


def user_count(request):
    return HttpResponse(str(User.objects.count()))


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
