"""The test project's views. The autoreload test rewrites GREETING in a copy of this file."""

from django.contrib.auth.models import User
from django.http import HttpResponse

GREETING = "hello from the tether test project"


def index(request):
    return HttpResponse(GREETING)


def user_count(request):
    return HttpResponse(str(User.objects.count()))
