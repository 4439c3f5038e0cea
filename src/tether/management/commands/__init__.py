"""tether's ``manage.py`` commands: ``runserver`` (uvicorn, WebSockets, autoreload) and ``runworker``."""
