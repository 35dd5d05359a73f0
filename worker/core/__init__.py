"""The pure core of callsync: parsing, verification and decisions, without I/O.

Nothing in this package imports Flask, Celery, Redis or httpx, reads the environment
or the clock: callers pass `now` and secrets in as arguments.
"""
