"""Management commands of the tether.status app."""
