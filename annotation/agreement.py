"""Inter-rater agreement for categorical expert decisions (e.g. keep/reject).

Why: the MicroVerse pipeline relies on expert panels, so the site reports how far the experts agree. The
point estimates come from the reference libraries rather than hand-written formulas, so the numbers match
what a reviewer gets from the same data in scikit-learn, statsmodels or ``krippendorff``:

* Cohen's kappa per rater pair: :func:`sklearn.metrics.cohen_kappa_score`;
* Fleiss' kappa over complete panels: :func:`statsmodels.stats.inter_rater.aggregate_raters` and
  :func:`statsmodels.stats.inter_rater.fleiss_kappa`;
* Krippendorff's alpha (nominal, missing data allowed): :func:`krippendorff.alpha`.

Confidence intervals are 95 % percentile bootstraps over items (resampling items with replacement using
``numpy.random.default_rng(seed)``; each statistic starts from a fresh generator with the same seed, so one
pair's interval does not depend on which other pairs exist). Resamples on which a statistic is undefined are
skipped. For speed, Cohen's bootstrap replicates are computed from resampled confusion matrices (drawn as
a multinomial, which is what resampling items does to a confusion matrix) with the formula scikit-learn uses
(the tests check they agree); Fleiss' and Krippendorff's replicates call the libraries on resampled count
tables.

Input everywhere is an iterable of ``(rater_id, item_id, label)`` triples with string labels; the categories
are the union of the labels seen. A rater may rate an item once (a repeated pair is a ``ValueError``).
Undefined values are ``None`` (never NaN), so every result is JSON-safe. Percent agreement is on a 0-100
scale.
"""
from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Hashable, Iterable
from dataclasses import asdict, dataclass
from itertools import combinations

import numpy as np

# scikit-learn, statsmodels and krippendorff are imported where they are used: together they take seconds to
# import, and every process that loads the URL configuration (web workers, Celery workers) would pay for them.

__all__ = [
    "AlphaResult",
    "FleissResult",
    "PairKappa",
    "agreement_report",
    "fleiss",
    "krippendorff_alpha",
    "pairwise_cohen",
    "percent_agreement",
]

CONFIDENCE = 0.95


@dataclass(frozen=True)
class PairKappa:
    """Cohen's kappa for one pair of raters over the items both rated."""

    rater_a: Hashable
    rater_b: Hashable
    n_items: int
    kappa: float | None
    ci_low: float | None
    ci_high: float | None
    percent_agreement: float | None


@dataclass(frozen=True)
class FleissResult:
    """Fleiss' kappa over the items rated by exactly ``n_raters_per_item`` raters."""

    n_items: int
    n_raters_per_item: int | None
    kappa: float | None
    ci_low: float | None
    ci_high: float | None


@dataclass(frozen=True)
class AlphaResult:
    """Krippendorff's alpha (nominal) over the items with at least two ratings."""

    n_items: int
    n_raters: int
    alpha: float | None
    ci_low: float | None
    ci_high: float | None


# --------------------------------------------------------------------------------------------------------
# Input handling


@dataclass(frozen=True)
class _Table:
    """Ratings as a raters x items matrix of category codes (float, NaN = not rated)."""

    raters: list
    items: list
    categories: list[str]
    matrix: np.ndarray
    n_ratings: int

    @property
    def n_categories(self) -> int:
        return len(self.categories)

    def item_counts(self) -> np.ndarray:
        """Items x categories matrix: how many raters gave each label to each item."""
        n_items = len(self.items)
        k = self.n_categories
        rated = ~np.isnan(self.matrix)
        item_index = np.broadcast_to(np.arange(n_items), self.matrix.shape)[rated]
        codes = self.matrix[rated].astype(np.int64)
        flat = np.bincount(item_index * k + codes, minlength=n_items * k)
        return flat.reshape(n_items, k)


def _sorted(values: Iterable) -> list:
    """Sort ids naturally; fall back to a stable textual order for mixed, unorderable id types."""
    values = list(values)
    try:
        return sorted(values)
    except TypeError:
        return sorted(values, key=lambda v: (type(v).__name__, repr(v)))


def _table(ratings) -> _Table:
    if isinstance(ratings, _Table):
        return ratings
    seen: dict[tuple, str] = {}
    for entry in ratings:
        try:
            rater, item, label = entry
        except (TypeError, ValueError):
            raise ValueError(f"each rating must be a (rater_id, item_id, label) triple, got {entry!r}") from None
        if not isinstance(label, str):
            raise ValueError(f"labels must be strings, got {label!r} from rater {rater!r} on item {item!r}")
        key = (rater, item)
        if key in seen:
            raise ValueError(f"rater {rater!r} rated item {item!r} more than once")
        seen[key] = label
    raters = _sorted({r for r, _ in seen})
    items = _sorted({i for _, i in seen})
    categories = sorted(set(seen.values()))
    rater_pos = {r: n for n, r in enumerate(raters)}
    item_pos = {i: n for n, i in enumerate(items)}
    code = {c: n for n, c in enumerate(categories)}
    matrix = np.full((len(raters), len(items)), np.nan)
    if seen:
        rows = np.fromiter((rater_pos[r] for r, _ in seen), dtype=np.int64, count=len(seen))
        cols = np.fromiter((item_pos[i] for _, i in seen), dtype=np.int64, count=len(seen))
        vals = np.fromiter((code[v] for v in seen.values()), dtype=np.float64, count=len(seen))
        matrix[rows, cols] = vals
    return _Table(raters, items, categories, matrix, len(seen))


def _check_bootstrap(bootstrap: int) -> int:
    if isinstance(bootstrap, bool) or not isinstance(bootstrap, (int, np.integer)) or bootstrap < 0:
        raise ValueError(f"bootstrap must be a non-negative integer, got {bootstrap!r}")
    return int(bootstrap)


def _finite(value) -> float | None:
    """A plain float, or None for NaN/inf/None (JSON-safe)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _percentile_ci(replicates: np.ndarray) -> tuple[float | None, float | None]:
    replicates = np.asarray(replicates, dtype=float)
    replicates = replicates[np.isfinite(replicates)]
    if replicates.size == 0:
        return None, None
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(replicates, [tail, 100 - tail])
    return float(low), float(high)


def _quiet(func, *args, **kwargs):
    """Call a library function, silencing its warnings about undefined (0/0) values."""
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore")
        return func(*args, **kwargs)


# --------------------------------------------------------------------------------------------------------
# Cohen's kappa


def _kappa_from_confusion(confusion: np.ndarray) -> np.ndarray:
    """Cohen's kappa for a stack of integer confusion matrices (..., K, K); NaN where undefined.

    Same quantity as scikit-learn's unweighted kappa, written as (n*trace - S) / (n^2 - S) with
    S = sum_k rowsum_k * colsum_k, in exact integer arithmetic; the denominator is 0 exactly when both raters
    used one and the same label throughout.
    """
    confusion = np.asarray(confusion, dtype=np.int64)
    n = confusion.sum(axis=(-2, -1))
    trace = np.trace(confusion, axis1=-2, axis2=-1)
    chance = (confusion.sum(axis=-1) * confusion.sum(axis=-2)).sum(axis=-1)
    numerator = n * trace - chance
    denominator = n * n - chance
    with np.errstate(divide="ignore", invalid="ignore"):
        kappa = numerator / denominator
    return np.where(denominator == 0, np.nan, kappa)


def _cohen_bootstrap(x: np.ndarray, y: np.ndarray, k: int, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Kappa on ``resamples`` bootstrap resamples of the shared items.

    Kappa depends on the items only through the pair's K x K confusion matrix, and the confusion matrix of
    n items drawn with replacement is Multinomial(n, observed cell shares). Drawing that directly is the same
    bootstrap distribution as resampling item indices, at a fraction of the cost.
    """
    n = len(x)
    observed = np.bincount(x * k + y, minlength=k * k)
    confusion = rng.multinomial(n, observed / n, size=resamples).reshape(resamples, k, k)
    return _kappa_from_confusion(confusion)


def _pairwise(table: _Table, bootstrap: int, seed) -> list[PairKappa]:
    from sklearn.metrics import cohen_kappa_score
    results = []
    k = table.n_categories
    for a, b in combinations(range(len(table.raters)), 2):
        row_a, row_b = table.matrix[a], table.matrix[b]
        shared = ~np.isnan(row_a) & ~np.isnan(row_b)
        n = int(shared.sum())
        if n == 0:
            continue  # the pair never met; nothing to report
        x = row_a[shared].astype(np.int64)
        y = row_b[shared].astype(np.int64)
        pct = float(np.mean(x == y) * 100)
        kappa = ci_low = ci_high = None
        if n >= 2:
            kappa = _finite(_quiet(cohen_kappa_score, x, y))
            if kappa is not None and bootstrap:
                rng = np.random.default_rng(seed)
                ci_low, ci_high = _percentile_ci(_cohen_bootstrap(x, y, k, bootstrap, rng))
        results.append(
            PairKappa(table.raters[a], table.raters[b], n, kappa, ci_low, ci_high, pct)
        )
    return results


def pairwise_cohen(ratings, *, bootstrap: int = 1000, seed=0) -> list[PairKappa]:
    """Cohen's kappa for every pair of raters that rated at least one item in common.

    Each pair is computed over the items both raters rated. ``kappa`` (and its CI) is None when the pair
    shares fewer than 2 items, or when kappa is undefined because both raters gave the same single label to
    every shared item (percent agreement is then 100). Pairs are ordered by sorted rater id.
    """
    return _pairwise(_table(ratings), _check_bootstrap(bootstrap), seed)


# --------------------------------------------------------------------------------------------------------
# Fleiss' kappa


def _most_common_panel(counts_per_item: np.ndarray) -> int | None:
    """The most frequent number of ratings per item among items with >= 2 ratings; ties -> larger panel."""
    counter = Counter(int(c) for c in counts_per_item if c >= 2)
    if not counter:
        return None
    return max(counter, key=lambda size: (counter[size], size))


def _fleiss(table: _Table, panel_size, bootstrap: int, seed) -> FleissResult:
    from statsmodels.stats.inter_rater import aggregate_raters, fleiss_kappa
    counts_per_item = (~np.isnan(table.matrix)).sum(axis=0)
    if panel_size is None:
        panel_size = _most_common_panel(counts_per_item)
        if panel_size is None:
            return FleissResult(0, None, None, None, None)
    elif isinstance(panel_size, bool) or not isinstance(panel_size, (int, np.integer)) or panel_size < 2:
        raise ValueError(f"panel_size must be an integer of at least 2, got {panel_size!r}")
    panel_size = int(panel_size)
    selected = counts_per_item == panel_size
    n_items = int(selected.sum())
    if n_items == 0:
        return FleissResult(0, panel_size, None, None, None)
    # Items x panel_size codes: sorting each item's column puts its NaNs (non-raters) last.
    codes = np.sort(table.matrix[:, selected].T, axis=1)[:, :panel_size].astype(np.int64)
    counts, _ = aggregate_raters(codes, n_cat=table.n_categories)
    kappa = _finite(_quiet(fleiss_kappa, counts, method="fleiss"))
    ci_low = ci_high = None
    if kappa is not None and bootstrap:
        rng = np.random.default_rng(seed)
        replicates = np.array(
            [
                _quiet(fleiss_kappa, counts[rng.integers(0, n_items, size=n_items)], method="fleiss")
                for _ in range(bootstrap)
            ]
        )
        ci_low, ci_high = _percentile_ci(replicates)
    return FleissResult(n_items, panel_size, kappa, ci_low, ci_high)


def fleiss(ratings, *, panel_size: int | None = None, bootstrap: int = 1000, seed=0) -> FleissResult:
    """Fleiss' kappa over complete panels: the items rated by exactly ``panel_size`` raters.

    Fleiss' kappa assumes the same number of ratings per item, so other items are left out rather than
    padded. With ``panel_size=None`` the most common number of ratings per item (among items with at least
    two) is used, ties going to the larger panel. ``kappa`` is None when undefined (no such items, or every
    rating has the same label).
    """
    return _fleiss(_table(ratings), panel_size, _check_bootstrap(bootstrap), seed)


# --------------------------------------------------------------------------------------------------------
# Krippendorff's alpha


def _alpha(table: _Table, bootstrap: int, seed) -> AlphaResult:
    import krippendorff
    counts_per_item = (~np.isnan(table.matrix)).sum(axis=0)
    selected = counts_per_item >= 2
    n_items = int(selected.sum())
    reliability = table.matrix[:, selected]
    n_raters = int((~np.isnan(reliability)).any(axis=1).sum())
    if n_items == 0 or table.n_categories < 2:
        # No pairable values, or a single category (the library refuses a one-value domain): undefined.
        return AlphaResult(n_items, n_raters, None, None, None)
    domain = list(range(table.n_categories))
    alpha = _finite(
        _quiet(
            krippendorff.alpha,
            reliability_data=reliability,
            value_domain=domain,
            level_of_measurement="nominal",
        )
    )
    ci_low = ci_high = None
    if alpha is not None and bootstrap:
        value_counts = table.item_counts()[selected]
        rng = np.random.default_rng(seed)
        replicates = np.array(
            [
                _quiet(
                    krippendorff.alpha,
                    value_counts=value_counts[rng.integers(0, n_items, size=n_items)],
                    value_domain=domain,
                    level_of_measurement="nominal",
                )
                for _ in range(bootstrap)
            ]
        )
        ci_low, ci_high = _percentile_ci(replicates)
    return AlphaResult(n_items, n_raters, alpha, ci_low, ci_high)


def krippendorff_alpha(ratings, *, bootstrap: int = 1000, seed=0) -> AlphaResult:
    """Krippendorff's alpha, nominal level, on the raters x items reliability matrix (NaN = missing).

    Items with fewer than two ratings carry no pairable values and are not counted in ``n_items``;
    ``n_raters`` counts the raters who rated at least one counted item. ``alpha`` is None when undefined
    (no pairable item, or only one category in use).
    """
    return _alpha(_table(ratings), _check_bootstrap(bootstrap), seed)


# --------------------------------------------------------------------------------------------------------
# Percent agreement and the report


def _percent(table: _Table) -> tuple[int, float | None]:
    counts = table.item_counts()
    m = counts.sum(axis=1)
    selected = m >= 2
    n_items = int(selected.sum())
    if n_items == 0:
        return 0, None
    counts, m = counts[selected], m[selected]
    agreeing_pairs = (counts * (counts - 1)).sum(axis=1)
    share = agreeing_pairs / (m * (m - 1))
    return n_items, float(share.mean() * 100)


def percent_agreement(ratings) -> tuple[int, float | None]:
    """``(n_items, percent)``: over items with at least two ratings, the mean share of agreeing rater pairs.

    An item rated keep, keep, reject has 1 agreeing pair out of 3, i.e. 33.3 %. ``percent`` is on a 0-100
    scale and None when no item has two ratings.
    """
    return _percent(_table(ratings))


def _json_id(value):
    if value is None or isinstance(value, (str, int, float)):
        return value
    return str(value)


def agreement_report(ratings, *, panel_size: int | None = None, bootstrap: int = 1000, seed=0) -> dict:
    """All agreement statistics in one JSON-serialisable dict (None instead of NaN).

    Keys: ``n_ratings``, ``n_items``, ``raters`` (sorted), ``categories``, ``pairwise`` (list of
    :class:`PairKappa` dicts), ``fleiss``, ``krippendorff``, ``percent_agreement`` (``{"n_items", "value"}``)
    and ``bootstrap`` (the settings used, for reproducibility).
    """
    bootstrap = _check_bootstrap(bootstrap)
    table = _table(ratings)
    pairs = []
    for pair in _pairwise(table, bootstrap, seed):
        row = asdict(pair)
        row["rater_a"], row["rater_b"] = _json_id(pair.rater_a), _json_id(pair.rater_b)
        pairs.append(row)
    n_pct, pct = _percent(table)
    return {
        "n_ratings": table.n_ratings,
        "n_items": len(table.items),
        "raters": [_json_id(r) for r in table.raters],
        "categories": list(table.categories),
        "pairwise": pairs,
        "fleiss": asdict(_fleiss(table, panel_size, bootstrap, seed)),
        "krippendorff": asdict(_alpha(table, bootstrap, seed)),
        "percent_agreement": {"n_items": n_pct, "value": pct},
        "bootstrap": {
            "resamples": bootstrap,
            "seed": _json_id(seed),
            "confidence": CONFIDENCE,
            "method": "percentile, items resampled with replacement",
        },
    }
