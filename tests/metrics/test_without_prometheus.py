"""Without prometheus_client (the ``metrics`` extra not installed), tether imports and serves as before, and turning
metrics on fails at start-up with an error that names the extra. Each case runs in a fresh interpreter in which
importing prometheus_client fails, as it does where the package is missing."""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = """
import sys


class NoPrometheus:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] == "prometheus_client":
            raise ImportError(f"No module named {name!r}")


sys.meta_path.insert(0, NoPrometheus())

import django
from django.conf import settings

settings.configure(INSTALLED_APPS=["tether"], TETHER_METRICS={metrics})
try:
    django.setup()
except Exception as error:
    print(type(error).__name__, error)
    raise SystemExit(1)

import asyncio

import tether.consumer
import tether.health
from tether.generic.websocket import AsyncWebsocketConsumer
from tether.metrics.views import metrics_view
from tether.testing import WebsocketCommunicator
from django.test import RequestFactory


class Echo(AsyncWebsocketConsumer):
    async def receive(self, text_data=None, bytes_data=None):
        await self.send(text_data=text_data)


async def echo():
    communicator = WebsocketCommunicator(Echo.as_asgi(), "/")
    await communicator.connect(10)
    await communicator.send_to(text_data="hi")
    reply = await communicator.receive_from(10)
    await communicator.disconnect()
    return reply


assert "prometheus_client" not in sys.modules
print("echo:", asyncio.run(echo()), "view:", metrics_view(RequestFactory().get("/metrics/")).status_code)
"""


def run(metrics: bool) -> subprocess.CompletedProcess[str]:
    script = textwrap.dedent(SCRIPT).replace("{metrics}", str(metrics))
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)


def test_tether_imports_and_serves_without_prometheus_client() -> None:
    result = run(metrics=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "echo: hi view: 404"


def test_turning_metrics_on_without_prometheus_client_names_the_extra() -> None:
    result = run(metrics=True)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.strip() == (
        "ImproperlyConfigured TETHER_METRICS needs prometheus_client: install tether's metrics extra "
        "(pip install -e '.[metrics]' in a clone of tether), or set TETHER_METRICS = False."
    )
