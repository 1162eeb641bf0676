"""The database side of the agreement report: Decision rows as (expert username, item id, value) triples, and the
report for a workflow, cached under a cheap fingerprint of its decisions.

No maths here: the statistics are ``annotation.agreement.agreement_report`` (plain Python). The page, the API
(``api/agreement/<workflow>/``) and ``manage.py agreement --json`` all call :func:`workflow_agreement`, so they give the
same numbers with the same keys for the same bootstrap count and seed.
"""
from __future__ import annotations

from django.core.cache import cache
from django.db.models import Count, Max

from annotation import agreement, services
from annotation.models import Decision, Workflow

DEFAULT_BOOTSTRAP = 1000
DEFAULT_SEED = 0
MAX_BOOTSTRAP = 10_000
CACHE_SECONDS = 24 * 60 * 60  # the fingerprint, not the timeout, is what invalidates an entry


def decisions(workflow: str):
    return Decision.objects.filter(item__workflow=workflow)


def decision_triples(workflow: str) -> list[tuple[str, int, str]]:
    """Every decision of the workflow as ``(expert username, review item id, value)``, in a stable order."""
    return [
        (username, item_id, value)
        for username, item_id, value in decisions(workflow)
        .order_by("item_id", "expert__username")
        .values_list("expert__username", "item_id", "value")
    ]


def decisions_fingerprint(workflow: str) -> str:
    """Changes whenever a decision of the workflow is added, changed (``updated_at`` moves) or removed.

    One aggregate query: count, highest id and latest ``updated_at``."""
    row = decisions(workflow).aggregate(n=Count("id"), top=Max("id"), last=Max("updated_at"))
    last = row["last"].isoformat() if row["last"] is not None else "-"
    return f"{row['n']}:{row['top'] or 0}:{last}"


def _cache_key(workflow: str, panel_size: int, bootstrap: int, seed: int, fingerprint: str) -> str:
    # Memcached refuses spaces and control characters in keys; an ISO timestamp has neither.
    return f"annotation:agreement:v1:{workflow}:p{panel_size}:b{bootstrap}:s{seed}:{fingerprint}"


def workflow_agreement(workflow: str, *, bootstrap: int = DEFAULT_BOOTSTRAP, seed: int = DEFAULT_SEED,
                       use_cache: bool = True) -> dict:
    """The agreement report of a workflow's decisions, as a JSON-ready dict.

    Keys: ``workflow``, ``panel_size`` (the workflow's panel: Fleiss' kappa is over items with exactly that many
    decisions, i.e. complete panels) and every key of :func:`annotation.agreement.agreement_report`.
    """
    if workflow not in Workflow.values:
        raise ValueError(f"unknown workflow {workflow!r}; one of: {', '.join(Workflow.values)}")
    if isinstance(bootstrap, bool) or not isinstance(bootstrap, int) or not 0 <= bootstrap <= MAX_BOOTSTRAP:
        raise ValueError(f"bootstrap must be an integer from 0 to {MAX_BOOTSTRAP}, got {bootstrap!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    panel_size = services.workflow_rule(workflow).panel_size
    key = None
    if use_cache:
        key = _cache_key(workflow, panel_size, bootstrap, seed, decisions_fingerprint(workflow))
        cached = cache.get(key)
        if cached is not None:
            return cached
    report = agreement.agreement_report(decision_triples(workflow), panel_size=panel_size if panel_size >= 2 else None,
                                        bootstrap=bootstrap, seed=seed)
    result = {"workflow": workflow, "panel_size": panel_size, **report}
    if key is not None:
        cache.set(key, result, CACHE_SECONDS)
    return result
