"""A tiny Django project served by tether's runserver, runworker and live server in subprocess tests."""
