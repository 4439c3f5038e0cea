"""The ASGI application a granian test server imports: the one named by ``TETHER_LIVE_APP``, after Django is set up.

granian imports its target by a dotted path in a process of its own, before anything has configured Django; the test
modules that hold the applications import models at module level. This module sets Django up first (with
``TETHER_LIVE_URLCONF`` as ``ROOT_URLCONF`` when the test asks for another URLconf, as ``override_settings`` would in
the test process), then imports ``module:attribute`` from ``TETHER_LIVE_APP``. Used by the ``live_serve`` fixture.
"""

from __future__ import annotations

import importlib
import os

import django
from django.conf import settings

__all__ = ["application"]

if os.environ.get("TETHER_LIVE_URLCONF"):
    settings.ROOT_URLCONF = os.environ["TETHER_LIVE_URLCONF"]
django.setup()

_module, _, _attribute = os.environ["TETHER_LIVE_APP"].partition(":")
application = getattr(importlib.import_module(_module), _attribute)
