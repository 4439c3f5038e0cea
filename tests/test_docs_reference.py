"""The API reference (docs/reference/, built by ``make docs``) has a page for every public module.

``make docs`` checks that the pages build and link; this checks that none is missing, so that a module added to the
public API table (test_public_api.py) without its reference page fails here, without building the site.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_public_api import PUBLIC_NAMES

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "docs" / "reference"

#: The public modules outside the table: the Redis layers (behind the redis extra) and modules of tether's own.
EXTRA_MODULES = [
    "tether.layers.redis",
    "tether.token_auth",
    "tether.revocation",
    "tether.dispatch",
    "tether.layers.durable",
    "tether.limits",
    "tether.outbound",
    "tether.denial",
    "tether.handshake",
    "tether.drain",
    "tether.wsprotocol",
    "tether.ratelimit",
    "tether.metrics",
    "tether.metrics.views",
    "tether.health",
    "tether.loop_lag",
    "tether.status",
    "tether.status.snapshot",
    "tether.status.publisher",
    "tether.status.collect",
    "tether.status.consumer",
    "tether.tracing",
    "tether.tracing.otel",
    "tether.presence",
    "tether.presence.consumer",
    "tether.streams",
    "tether.streams.consumer",
]
MODULES = [*PUBLIC_NAMES, *EXTRA_MODULES]


@pytest.mark.parametrize("module", MODULES)
def test_reference_page_renders_the_module(module: str) -> None:
    page = REFERENCE / f"{module}.md"
    assert page.is_file(), f"docs/reference/{module}.md is missing"
    assert f"::: {module}\n" in page.read_text()


@pytest.mark.parametrize("module", MODULES)
def test_reference_page_is_in_the_nav_and_the_index(module: str) -> None:
    assert f"- reference/{module}.md\n" in (ROOT / "mkdocs.yml").read_text()
    assert f"]({module}.md)" in (REFERENCE / "index.md").read_text()
