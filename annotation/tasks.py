"""Celery tasks of the annotation app (autodiscovered): the precomputed agreement report."""
from annotation.agreement_cache import agreement_recompute  # noqa: F401
