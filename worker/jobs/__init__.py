"""The Celery adapter: the app factory, the tasks and their retry policy, beat and the broker."""
