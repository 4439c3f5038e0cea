"""Tests of tether.tracing."""
