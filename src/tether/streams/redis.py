"""Streams for the Redis layers (being written)."""

from __future__ import annotations

from typing import Any

from tether.streams.base import Streams
from tether.streams.settings import StreamPolicy

__all__ = ["redis_streams"]


def redis_streams(layer: Any, policy: StreamPolicy) -> Streams:
    raise TypeError(f"{type(layer).__name__} has no streams backend yet.")
