"""Names shared by the dashboard's consumer and its worker."""

from __future__ import annotations

__all__ = ["DASHBOARD_CHANNEL", "DASHBOARD_GROUP"]

#: The worker channel the ticker listens on: ``python manage.py runworker dashboard-ticker``.
DASHBOARD_CHANNEL = "dashboard-ticker"
#: Every open dashboard page is a member of this group.
DASHBOARD_GROUP = "dashboard"
