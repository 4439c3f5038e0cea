"""tether's benchmarks: each one runs tether and the Django Channels stack side by side, in one run, on 127.0.0.1.

``make bench`` (or ``.venv-bench/bin/python -m benchmarks``) runs them all; ``make bench BENCH=echo`` runs one.
Every benchmark starts what it needs (its own redis-server on a free port, ASGI servers and load generators as
subprocesses), alternates tether and its peer over several rounds, and compares by ratio within the run.
"""
