"""Keep auth tokens given in the query string (``?token=...``) out of the server's request log.

A client that cannot send a token in the ``Sec-WebSocket-Protocol`` header puts it in the URL, and uvicorn writes
every URL it serves, query string included, to its log: HTTP requests to the ``uvicorn.access`` logger, WebSocket
handshakes (``"WebSocket /ws/feed/?token=..." [accepted]``) to ``uvicorn.error``. Whoever reads the logs (a log
shipper, a support engineer, an attacker who got at a backup) could then replay the token until it expires.

``TokenRedactingFilter`` replaces the value of the token parameters in those lines with ``[redacted]``, and
``redact_tokens_in_access_log()`` installs it on both loggers. tether's ``runserver`` and live server install it
themselves (``tether.server.make_server``); under ``uvicorn`` or ``gunicorn`` in production, call
``redact_tokens_in_access_log()`` in ``asgi.py`` (docs/deploying.md). The filter sits on the loggers rather than on a
handler, so it holds whatever handlers the server or ``LOGGING`` attaches later, and logging reconfiguration
(``dictConfig``) keeps it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from urllib.parse import unquote_plus

__all__ = ["REDACTED", "SERVER_LOGGERS", "TOKEN_QUERY_PARAMS", "TokenRedactingFilter", "redact_tokens_in_access_log"]

#: What a token's value becomes in the log.
REDACTED = "[redacted]"
#: The query parameters redacted by default: ``TokenAuthMiddleware``'s default ``query_param``.
TOKEN_QUERY_PARAMS = ("token",)
#: The loggers uvicorn writes URLs to: HTTP requests on ``uvicorn.access``, WebSocket handshakes on ``uvicorn.error``
#: (at INFO), and whole ASGI scopes on ``uvicorn.asgi`` (at its TRACE level, ``--log-level trace``).
SERVER_LOGGERS = ("uvicorn.access", "uvicorn.error", "uvicorn.asgi")

# A query string: from "?" to the end of the word. A request line cannot hold whitespace, so the whole query is
# taken, even characters such as '"' or '#' that a hostile client might put there to cut a narrower pattern short.
_QUERY = re.compile(r"\?(\S*)")
# The query string of an ASGI scope written as a dict (uvicorn's trace lines): the bytes' repr escapes any quote.
_SCOPE_QUERY = re.compile(r"('query_string': b')([^']*)")


class TokenRedactingFilter(logging.Filter):
    """A logging filter that replaces the values of the ``params`` query parameters with ``[redacted]``.

    It rewrites every string argument of a record (uvicorn passes the path with its query string as one) and the
    message itself, keeping the arguments' positions, which uvicorn's access formatter relies on. A parameter is
    recognised as ``TokenAuthMiddleware`` reads it: between ``&`` separators, its name percent-decoded, so
    ``?%74oken=...`` is redacted too. It never drops a record. Usable in ``logging.config.dictConfig``:
    ``{"()": "tether.access_log.TokenRedactingFilter", "params": ["token"]}``.
    """

    def __init__(self, params: Iterable[str] = TOKEN_QUERY_PARAMS) -> None:
        super().__init__()
        self.params = frozenset([params] if isinstance(params, str) else params)

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(self._redact_argument(arg) for arg in record.args)
        elif isinstance(record.args, Mapping):
            record.args = {key: self._redact_argument(value) for key, value in record.args.items()}
        if isinstance(record.msg, str):
            record.msg = self.redact(record.msg)
        return True

    def redact(self, text: str) -> str:
        """``text`` with the value of every token parameter in its query strings replaced by ``[redacted]``."""
        if "?" in text:
            text = _QUERY.sub(lambda match: "?" + self._redact_fields(match.group(1)), text)
        if "'query_string': b'" in text:
            text = _SCOPE_QUERY.sub(lambda match: match.group(1) + self._redact_fields(match.group(2)), text)
        return text

    def _redact_argument(self, argument: object) -> object:
        """A string argument redacted; a container (a scope) as its redacted text when it holds a token, else as is."""
        if isinstance(argument, str):
            return self.redact(argument)
        if isinstance(argument, (dict, list, tuple)):
            text = str(argument)  # what "%s" would print; the record is formatted from the same text
            redacted = self.redact(text)
            return redacted if redacted != text else argument
        return argument

    def _redact_fields(self, query: str) -> str:
        fields = query.split("&")
        for index, field in enumerate(fields):
            name, equals, value = field.partition("=")
            if equals and value and unquote_plus(name) in self.params:
                fields[index] = f"{name}={REDACTED}"
        return "&".join(fields)


def redact_tokens_in_access_log(
    params: Iterable[str] = TOKEN_QUERY_PARAMS, loggers: Iterable[str] = SERVER_LOGGERS
) -> TokenRedactingFilter:
    """Install a ``TokenRedactingFilter`` for ``params`` on uvicorn's request loggers; return it.

    Safe to call more than once and at any time, before or after the server configures logging: each call adds its
    ``params`` to those already redacted, so ``redact_tokens_in_access_log(["token", "key"])`` in ``asgi.py`` and the
    call tether's own server makes add up. Pass the ``query_param`` of every ``TokenAuthMiddleware`` that uses
    another name than ``token``.
    """
    names = list(loggers)
    installed = [
        item for name in names for item in logging.getLogger(name).filters if isinstance(item, TokenRedactingFilter)
    ]
    redacting = TokenRedactingFilter(
        set().union(*(item.params for item in installed), [params] if isinstance(params, str) else params)
    )
    for name in names:
        logger = logging.getLogger(name)
        for item in installed:
            logger.removeFilter(item)
        logger.addFilter(redacting)
    return redacting
