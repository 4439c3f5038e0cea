"""The limit: the same WebSocket routes as ``django_app`` written directly on ASGI, with no framework in between.

``/ws/echo/`` sends every frame back; ``/ws/room/<room>/`` keeps each room's members in memory and fans a frame
out to all of them from the sender's own task. HTTP ``/stats`` reports the number of rooms and members,
``/heap`` where memory goes (``benchmarks/apps/heap.py``).
"""

import json

from benchmarks.apps.heap import heap

rooms: dict[str, dict[int, object]] = {}


async def echo(receive, send):
    while True:
        message = await receive()
        kind = message["type"]
        if kind == "websocket.connect":
            await send({"type": "websocket.accept"})
        elif kind == "websocket.receive":
            await send({"type": "websocket.send", "text": message.get("text"), "bytes": message.get("bytes")})
        elif kind == "websocket.disconnect":
            return


async def room(name, receive, send):
    members = rooms.setdefault(name, {})
    key = id(send)
    try:
        while True:
            message = await receive()
            kind = message["type"]
            if kind == "websocket.connect":
                members[key] = send
                await send({"type": "websocket.accept"})
            elif kind == "websocket.receive":
                frame = {"type": "websocket.send", "text": message.get("text")}
                for member in list(members.values()):
                    try:
                        await member(frame)
                    except Exception:  # that member is going away; its own task removes it
                        pass
            elif kind == "websocket.disconnect":
                return
    finally:
        members.pop(key, None)
        if not members:
            rooms.pop(name, None)


async def application(scope, receive, send):
    if scope["type"] == "websocket":
        path = scope["path"]
        if path.startswith("/ws/room/"):
            await room(path.removeprefix("/ws/room/").strip("/"), receive, send)
        else:
            await echo(receive, send)
    elif scope["type"] == "http":
        if scope["path"] == "/heap":
            body = json.dumps(heap(scope["query_string"].decode())).encode()
        else:
            body = json.dumps({"groups": len(rooms), "channels": sum(len(m) for m in rooms.values())}).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})
