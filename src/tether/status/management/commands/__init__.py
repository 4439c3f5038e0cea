"""``manage.py tether_status``."""
