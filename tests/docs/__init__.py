"""Tests that follow the documentation pages verbatim."""
