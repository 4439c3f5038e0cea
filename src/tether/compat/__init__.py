"""Running code written for Django Channels on tether, and finding what is left of Channels in a project.

``install()`` (see ``tether.compat.alias``) makes ``import channels...`` and ``import channels_redis...`` resolve to
tether's modules, so Channels plug-ins run unchanged. ``tether.compat.check`` scans a project for Channels imports
and settings still to rename. See docs/coming-from-channels.md.
"""

from __future__ import annotations

from tether.compat.alias import install, is_installed, uninstall

__all__ = ["install", "is_installed", "uninstall"]
