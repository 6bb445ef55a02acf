"""Background work: the in-process worker and the Celery app."""
