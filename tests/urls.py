"""URLs for the test project: Django views served next to consumers in live-server tests."""

from django.http import HttpResponse
from django.urls import path


def index(request):
    return HttpResponse("tether test project")


urlpatterns = [path("", index)]
