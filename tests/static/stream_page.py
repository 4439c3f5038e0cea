"""The server of the tether.js stream tests (tests/static/test_tether_streams_js.py and
test_delivery_under_drops.py): the pages, tether.js, and the protocol tests' ``StreamConsumer``
(tests/project/project/streams_app.py) with a few more requests a test can drive.

As there, the user is the query string's ``user``, anyone may subscribe to ``room.*``, and ``publish`` sends
``count`` messages ``{"n": ...}`` to a stream. Added here: a gate (while ``CONTROL["gate_open"]`` is False the
consumer refuses connections), and the requests ``slow`` (answers after ``seconds``), ``note`` (records its params in
``NOTES``, for the tests of what a page sent) and ``play`` (sends its params as a frame, to play a server that repeats
or skips an offset, or sends a ``reload`` frame).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from django.urls import path

import tether
from tests.project.project.streams_app import QueryStringUserMiddleware, RoomStreams
from tether.routing import ProtocolTypeRouter, URLRouter

__all__ = ["CONTROL", "NOTES", "application"]

TETHER_JS = Path(tether.__file__).parent / "static" / "tether" / "tether.js"

#: Switches the tests flip: while ``gate_open`` is False the consumer refuses connections.
CONTROL = {"gate_open": True}
#: The params of every ``note`` request, in arrival order.
NOTES: list[Any] = []

PAGE = b"""<!doctype html>
<html><head><meta charset="utf-8"><script src="/tether.js"></script>
<script>
  // What the stream tests read: the messages handed to handlers, reload verdicts, presence lists, replies.
  window.got = [];
  window.reloads = [];
  window.presence = [];
  window.settled = [];
  window.collect = (stream, options) => socket.subscribe(stream, (data, meta) => got.push({data, ...meta}),
    Object.assign({onReload: (event) => reloads.push(event), onPresence: (members) => presence.push(members)},
                  options || {}));
  window.call = (method, params, options) => socket.request(method, params, options).then(
    (result) => settled.push({method, result}), (error) => settled.push({method, code: error.code}));
</script></head><body><ol id="shown"></ol></body></html>"""


#: A reader of the stream ``room.drops`` that shows each message as a list item, and keeps what it shows across a
#: reload as an application keeps its view (its list in sessionStorage), so that the list is the whole story: a
#: message handed over twice, or never, shows. It counts the connection drops it lived through.
READER = b"""<!doctype html>
<html><head><meta charset="utf-8"><script src="/tether.js"></script></head><body><ol id="shown"></ol>
<script>
  const list = document.getElementById("shown");
  const kept = JSON.parse(sessionStorage.getItem("shown") || "[]");
  window.drops = Number(sessionStorage.getItem("drops") || 0);
  function show(offset, n) {
    const item = document.createElement("li");
    item.dataset.offset = offset;
    item.textContent = n;
    list.append(item);
  }
  for (const [offset, n] of kept) show(offset, n);
  window.socket = Tether.connect("streams/?user=reader", {resume: "reader", initialDelay: 100, maxDelay: 1000});
  socket.on("close", () => sessionStorage.setItem("drops", String(++window.drops)));
  socket.subscribe("room.drops", (data, {offset}) => {
    show(offset, data.n);
    kept.push([offset, data.n]);
    sessionStorage.setItem("shown", JSON.stringify(kept));
  });
</script></body></html>"""


class Streams(RoomStreams):
    async def websocket_connect(self, message: Any) -> None:
        if not CONTROL["gate_open"]:
            await self.close()
            return
        await super().websocket_connect(message)

    async def request_slow(self, params: dict[str, Any]) -> str:
        await asyncio.sleep(params["seconds"])
        return "late"

    async def request_note(self, params: dict[str, Any]) -> None:
        NOTES.append(params)

    async def request_play(self, params: dict[str, Any]) -> None:
        await self.send_json(params)


async def serve_page(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["path"] == "/tether.js":
        body, content_type = TETHER_JS.read_bytes(), b"text/javascript"
    elif scope["path"] == "/reader":
        body, content_type = READER, b"text/html; charset=utf-8"
    else:
        body, content_type = PAGE, b"text/html; charset=utf-8"
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", content_type)]})
    await send({"type": "http.response.body", "body": body})


application = ProtocolTypeRouter(
    {"http": serve_page, "websocket": QueryStringUserMiddleware(URLRouter([path("streams/", Streams.as_asgi())]))}
)
