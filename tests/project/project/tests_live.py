"""Live-server tests that Django's own test runner runs (``manage.py test project.tests_live``) in a test of tether."""

import asyncio
from urllib.request import urlopen

import websockets
from django.contrib.auth.models import User

from tether import testing


class LiveServerUnderDjangosRunner(testing.ChannelsLiveServerTestCase):
    def test_page_is_served(self):
        with urlopen(f"{self.live_server_url}/", timeout=10) as response:
            self.assertEqual(response.read().decode(), "hello from the tether test project")

    def test_server_sees_rows_the_test_created(self):
        User.objects.create(username="ada")
        with urlopen(f"{self.live_server_url}/users/", timeout=10) as response:
            self.assertEqual(response.read().decode(), "1")

    def test_static_file_is_served(self):
        with urlopen(f"{self.live_server_url}/static/project/hello.txt", timeout=10) as response:
            self.assertEqual(response.read().decode().strip(), "a static file of the tether test project")

    def test_websocket_echo(self):
        async def echo():
            async with websockets.connect(f"{self.live_server_ws_url}/ws/echo/") as ws:
                await ws.send("ping")
                return await ws.recv()

        self.assertEqual(asyncio.run(echo()), "ping")
