"""Tests of tether.ratelimit."""
