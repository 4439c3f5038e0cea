"""No HTTP pages: the project is reached over WebSockets only."""

urlpatterns: list = []
