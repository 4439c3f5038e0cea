"""Presence for the in-memory layer: the records live in this process, as the layer's groups do.

There is no other process to die, so no heartbeat: a member stays until it leaves (or ``close()``).
"""

from __future__ import annotations

from typing import Any

from tether.layers.base import BaseChannelLayer
from tether.presence.base import Presence, Record

__all__ = ["MemoryPresence"]


class MemoryPresence(Presence):
    """``Presence`` kept in a dict per group, for ``InMemoryChannelLayer``."""

    def __init__(self, layer: BaseChannelLayer, **options: Any) -> None:
        super().__init__(layer, **options)
        self._records: dict[str, dict[str, Record]] = {}

    async def _store_join(self, group: str, record: Record, first: bool) -> bool:
        records = self._records.setdefault(group, {})
        new = record.channel not in records
        records[record.channel] = record
        return new

    async def _store_leave(self, group: str, channel: str) -> Record | None:
        records = self._records.get(group)
        if records is None:
            return None
        removed = records.pop(channel, None)
        if not records:
            del self._records[group]
        return removed

    async def _store_list(self, group: str) -> list[Record]:
        return list(self._records.get(group, {}).values())
