"""A small project as Django Channels' tutorial has people write it, laid out in a folder for the migration tests."""

from __future__ import annotations

from pathlib import Path

__all__ = ["FILES", "write_channels_project"]

FILES: dict[str, str] = {
    "manage.py": """\
import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
""",
    "mysite/__init__.py": "",
    "mysite/settings.py": """\
SECRET_KEY = "not-secret"
DEBUG = True
ALLOWED_HOSTS = []
INSTALLED_APPS = [
    "daphne",
    "channels",
    "chat",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.staticfiles",
]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
ASGI_APPLICATION = "mysite.asgi.application"
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [("127.0.0.1", 6379)]},
    },
    "local": {"BACKEND": 'channels.layers.InMemoryChannelLayer'},
}
STATIC_URL = "/static/"
ROOT_URLCONF = "mysite.urls"
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
""",
    "mysite/urls.py": "urlpatterns = []\n",
    "mysite/asgi.py": """\
import os

from channels.auth import AuthMiddlewareStack
from channels.routing import ProtocolTypeRouter, URLRouter
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
django_asgi_app = get_asgi_application()

import chat.routing

application = ProtocolTypeRouter(
    {"http": django_asgi_app, "websocket": AuthMiddlewareStack(URLRouter(chat.routing.websocket_urlpatterns))}
)
""",
    "chat/__init__.py": "",
    "chat/routing.py": """\
from django.urls import re_path

from . import consumers

websocket_urlpatterns = [re_path(r"ws/chat/(?P<room_name>\\w+)/$", consumers.ChatConsumer.as_asgi())]
""",
    "chat/consumers.py": """\
import channels.layers
from channels.generic.websocket import AsyncWebsocketConsumer


class ChatConsumer(AsyncWebsocketConsumer):
    async def connect(self):
        self.room_group_name = "chat_" + self.scope["url_route"]["kwargs"]["room_name"]
        await self.channel_layer.group_add(self.room_group_name, self.channel_name)
        await self.accept()

    async def receive(self, text_data):
        layer = channels.layers.get_channel_layer()
        await layer.group_send(self.room_group_name, {"type": "chat.message", "message": text_data})

    async def chat_message(self, event):
        await self.send(text_data=event["message"])
""",
    "requirements.txt": "Django>=5.0\nchannels[daphne]>=4.0  # websockets\nchannels-redis==4.2.0\n",
}


def write_channels_project(root: Path, **replacements: str) -> Path:
    """Write ``FILES`` under ``root`` (with ``replacements`` overriding files by path) and return ``root``."""
    for name, text in {**FILES, **replacements}.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root
