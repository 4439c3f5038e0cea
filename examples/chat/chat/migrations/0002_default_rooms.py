"""Open the rooms a new installation starts with."""

from django.db import migrations

DEFAULT_ROOMS = [
    ("general", "Anything goes: say hello"),
    ("random", "Off-topic, links and fun"),
    ("help", "Questions about tether"),
]


def create_rooms(apps, schema_editor):
    Room = apps.get_model("chat", "Room")
    for name, topic in DEFAULT_ROOMS:
        Room.objects.get_or_create(name=name, defaults={"topic": topic})


def delete_rooms(apps, schema_editor):
    apps.get_model("chat", "Room").objects.filter(name__in=[name for name, _ in DEFAULT_ROOMS]).delete()


class Migration(migrations.Migration):
    dependencies = [("chat", "0001_initial")]
    operations = [migrations.RunPython(create_rooms, delete_rooms)]
