#!/usr/bin/env python
"""manage.py of the Channels-style project that the compat tests serve through tether.compat's alias."""

import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "compatproject.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
