"""Tests of tether.revocation: sockets that follow the login, across processes, and what counts as its end."""
