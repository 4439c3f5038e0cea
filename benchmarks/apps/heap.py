"""Where a server's memory goes: a tracemalloc and object census of the process, diffed against a mark.

Served by both benchmark apps at ``/heap`` when ``BENCH_TRACEMALLOC=1`` (tracemalloc then runs from the app's import):
``/heap?mark`` takes the baseline, ``/heap?per=N`` answers what was allocated since, per connection for ``N``
connections: the source lines that allocated it (tracemalloc, one frame) and the live objects by type (the
collector's census, ``sys.getsizeof`` each). ``benchmarks/idle.py --profile`` drives it.
"""

import gc
import os
import sys
import tracemalloc
from collections import Counter

ENABLED = os.environ.get("BENCH_TRACEMALLOC") == "1"
if ENABLED:
    tracemalloc.start(1)
#: How many source lines and object types a report lists (``BENCH_HEAP_TOP``): more to diff two variants whole.
_TOP = int(os.environ.get("BENCH_HEAP_TOP", "40"))

_mark: dict = {}


def _census() -> tuple[Counter, Counter]:
    counts: Counter = Counter()
    sizes: Counter = Counter()
    for obj in gc.get_objects():
        kind = type(obj)
        name = f"{getattr(kind, '__module__', '?')}.{getattr(kind, '__qualname__', kind.__name__)}"
        counts[name] += 1
        sizes[name] += sys.getsizeof(obj)
    return counts, sizes


def heap(query: str) -> dict:
    """``mark`` takes the baseline; ``per=N`` reports the growth since it, divided by ``N``."""
    if not ENABLED:
        return {"error": "start the server with BENCH_TRACEMALLOC=1"}
    gc.collect()
    if query == "mark":
        _mark["snapshot"] = tracemalloc.take_snapshot()
        _mark["census"] = _census()
        return {"marked": True}
    per = max(1, int(query.removeprefix("per=") or 1))
    snapshot = tracemalloc.take_snapshot()
    lines = snapshot.compare_to(_mark["snapshot"], "lineno")
    counts, sizes = _census()
    old_counts, old_sizes = _mark["census"]
    types = sorted(
        ((name, (counts[name] - old_counts[name]) / per, (sizes[name] - old_sizes[name]) / per) for name in counts),
        key=lambda item: -item[2],
    )
    total = sum(stat.size_diff for stat in lines)
    return {
        "traced_bytes_per_connection": total / per,
        "lines": [
            {
                "where": f"{stat.traceback[0].filename}:{stat.traceback[0].lineno}",
                "bytes": stat.size_diff / per,
                "blocks": stat.count_diff / per,
            }
            for stat in lines[:_TOP]
        ],
        "objects": [{"type": name, "count": count, "bytes": size} for name, count, size in types[:_TOP] if size > 0],
    }
