"""A Django project for subprocess tests of runserver, runworker and the live server (see harness.py)."""
