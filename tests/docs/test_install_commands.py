"""No page or error message tells users to install tether from the package index, where it is not yet.

``pip install "django-tether[...]"`` fails today (#10 item 8). docs/getting-started.md#1-install says how to install
from a clone, a git URL or a wheel, and every other place that names an install command uses one of those ways. The
git URL form (``django-tether[...] @ git+...``) is a working requirement and is allowed; so is a sentence that says
the index form works only once tether is published.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
INDEX_INSTALL = re.compile(r"""pip install (-U |--upgrade )?["']?django-tether\b""")
#: What may follow on the same line: the git URL form, or words saying the index form is for later.
ALLOWED = (" @ git+", "once it is on", "finds nothing")


def index_installs() -> list[str]:
    """Every line of the docs, the README and the source that installs django-tether from the package index."""
    files = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")), *sorted((ROOT / "src").rglob("*.py"))]
    found = []
    for path in files:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if INDEX_INSTALL.search(line) and not any(allowed in line for allowed in ALLOWED):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    return found


def test_no_page_or_message_installs_tether_from_the_package_index():
    assert index_installs() == []
