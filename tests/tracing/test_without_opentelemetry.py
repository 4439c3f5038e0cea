"""Without OpenTelemetry (the ``otel`` extra not installed), tether imports and serves as before, and turning tracing
on fails at start-up with an error that names the extra. Each case runs in a fresh interpreter in which
``sys.modules`` holds ``None`` for ``opentelemetry``, so importing it fails as it does where the package is missing."""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = """
import asyncio, sys

sys.modules["opentelemetry"] = None  # "import opentelemetry" now raises ImportError

import django
from django.conf import settings

settings.configure(INSTALLED_APPS=["tether"], TETHER_TRACING={tracing})
try:
    django.setup()
except Exception as error:
    raise SystemExit(f"{type(error).__name__} {error}")

from tether.consumer import AsyncConsumer
from tether.testing import ApplicationCommunicator


class Answer(AsyncConsumer):
    async def ping(self, message):
        await self.send({"type": "pong", "keys": sorted(message)})


async def main():
    communicator = ApplicationCommunicator(Answer.as_asgi(), {"type": "channel"})
    await communicator.send_input({"type": "ping", "_trace": {"sent_at": 0}})
    print(await communicator.receive_output(10))


asyncio.run(main())
print(sorted(name for name in sys.modules if name.startswith("opentelemetry.")))
"""


def run(tracing: bool) -> subprocess.CompletedProcess[str]:
    script = textwrap.dedent(SCRIPT).replace("{tracing}", str(tracing))
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)


def test_tether_imports_and_serves_without_opentelemetry() -> None:
    result = run(tracing=False)
    assert result.returncode == 0, result.stdout + result.stderr
    # The trace entry a tracing process may have added is gone before the handler, tracing or not.
    assert result.stdout.splitlines() == ["{'type': 'pong', 'keys': ['type']}", "[]"]


def test_turning_tracing_on_without_opentelemetry_names_the_extra() -> None:
    result = run(tracing=True)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.strip() == (
        "ImproperlyConfigured TETHER_TRACING = True needs OpenTelemetry: install tether's otel extra "
        "(pip install -e '.[otel]' in a clone of tether), or set TETHER_TRACING = False."
    )
