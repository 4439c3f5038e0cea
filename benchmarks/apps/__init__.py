"""The ASGI applications the benchmarks serve: one Django app for both stacks, and a bare ASGI app as the limit."""
