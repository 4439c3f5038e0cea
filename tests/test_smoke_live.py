import websockets

from tests.asgi import application


async def test_echo_over_uvicorn(serve):
    server = serve(application)
    async with websockets.connect(f"{server.ws_url}/ws/echo/") as ws:
        await ws.send("hello")
        assert await ws.recv() == "hello"
