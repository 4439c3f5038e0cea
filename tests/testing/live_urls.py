"""URLs the live-server tests point ROOT_URLCONF at, to prove the server process takes the test's settings."""

from django.conf import settings
from django.contrib.auth.models import User
from django.http import HttpResponse
from django.urls import path


def index(request):
    return HttpResponse("served by the live server")


def user_count(request):
    return HttpResponse(str(User.objects.count()))


def debug(request):
    return HttpResponse(str(settings.DEBUG))


urlpatterns = [
    path("", index),
    path("users/", user_count),
    path("debug/", debug),
]
