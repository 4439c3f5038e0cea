"""The test project's application with the line docs/deploying.md adds to ``asgi.py`` for production servers."""

from tests.asgi import application
from tether.access_log import redact_tokens_in_access_log

__all__ = ["application"]

redact_tokens_in_access_log()
