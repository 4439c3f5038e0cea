"""A project written for Django Channels and two of its plug-ins, run unchanged on tether through the alias."""
