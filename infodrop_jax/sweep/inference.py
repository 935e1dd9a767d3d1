"""The statistics behind a sweep's verdicts: an effect, its standard error and degrees of freedom; a simultaneous
interval over a check's comparisons; and the three-way decision of an interval against the region a claim names.

Everything is vectorised over leading axes (the last axis holds the seeds or runs), so the rules that decide a
report are the rules the simulation tests run thousands of times (tests/test_sweep_checks.py).

The rule, in one place:
- Each comparison of a check (a "leaf": one width, one layer, one pair of β) has an estimated effect with its
  standard error and degrees of freedom: Welch's t for two groups of seeds, a one-sample t for a per-run
  difference (paired within the run), or a normal interval for a value whose own Monte Carlo error was measured.
- A check of m leaves draws two-sided intervals at level 1 − α/m (Bonferroni), so that all m hold at once with
  probability ≥ 1 − α. Every statement read from them, "agrees" or "disagrees", over any of its leaves and any
  'all' / 'any' combination of them, is then wrong with probability ≤ α. (Holm rejects more often than Bonferroni
  but gives no intervals to print; a verdict here is read off the interval the report shows.)
- A leaf agrees (+1) when its interval lies inside the claim's region, disagrees (−1) when it lies outside, and
  cannot tell (0) when it straddles a boundary or has no standard error (one seed, no Monte Carlo error).
- Leaves combine with three-valued logic (`all_of`, `any_of`).
"""
from __future__ import annotations

import math

import numpy as np

ALPHA = 0.05
AGREE, CANNOT_TELL, DISAGREE = 1, 0, -1


def _t_ppf(q, df):
  from scipy import stats  # pylint: disable=g-import-not-at-top  (only a report loads scipy)
  df = np.asarray(df, dtype=float)
  # df = inf is the normal quantile (scipy gives it too, but warns for some versions).
  return np.where(np.isinf(df), stats.norm.ppf(q), stats.t.ppf(q, np.where(np.isinf(df), 1.0, df)))


def _t_sf(x, df):
  from scipy import stats  # pylint: disable=g-import-not-at-top
  df = np.asarray(df, dtype=float)
  return np.where(np.isinf(df), stats.norm.sf(x), stats.t.sf(x, np.where(np.isinf(df), 1.0, df)))


def _mean_var(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
  n = x.shape[-1]
  mean = x.mean(axis=-1)
  var = x.var(axis=-1, ddof=1) if n > 1 else np.full(mean.shape, np.nan)
  return mean, var, n


def welch(a, b) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(mean(a) − mean(b), its standard error, Welch–Satterthwaite degrees of freedom); seeds on the last axis.
  Fewer than two seeds in a group: the standard error is NaN (cannot tell). Both groups constant: se = 0, df = inf
  (the difference is known exactly)."""
  a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
  ma, va, na = _mean_var(a)
  mb, vb, nb = _mean_var(b)
  sa, sb = va / na, vb / nb
  se2 = sa + sb
  with np.errstate(divide='ignore', invalid='ignore'):
    df = se2 ** 2 / (sa ** 2 / (na - 1 if na > 1 else np.nan) + sb ** 2 / (nb - 1 if nb > 1 else np.nan))
  df = np.where(se2 == 0, np.inf, df)
  return ma - mb, np.sqrt(se2), df


def one_sample(d) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(mean(d), its standard error, n − 1) of per-run values d (e.g. a difference paired within each run)."""
  d = np.asarray(d, dtype=float)
  mean, var, n = _mean_var(d)
  se = np.sqrt(var / n)
  return mean, se, np.where(se == 0, np.inf, float(n - 1))


def measured(value, stderr) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """A value with its own Monte Carlo standard error (e.g. an importance-weighted bound over 10 000 images): a
  normal interval. stderr = 0 means the value is known exactly."""
  value = np.asarray(value, dtype=float)
  return value, np.broadcast_to(np.asarray(stderr, dtype=float), value.shape), np.full(value.shape, np.inf)


def half_width(se, df, family: int = 1, alpha: float = ALPHA) -> np.ndarray:
  """The half width of each two-sided interval at level 1 − alpha / family."""
  se = np.asarray(se, dtype=float)
  with np.errstate(invalid='ignore'):
    return np.where(se == 0, 0.0, _t_ppf(1.0 - alpha / (2.0 * family), df) * se)


def decide(effect, se, df, lo, hi, family: int = 1, alpha: float = ALPHA) -> np.ndarray:
  """+1 where the interval lies inside (lo, hi), −1 where it lies outside, 0 where it straddles a boundary or the
  standard error is unknown (NaN). An exact value (se = 0) on a boundary is outside: the claim is strict."""
  effect = np.asarray(effect, dtype=float)
  h = half_width(se, df, family, alpha)
  low, high = effect - h, effect + h
  known = np.isfinite(effect) & np.isfinite(h)
  inside = (low > lo) & (high < hi)
  outside = (high <= lo) | (low >= hi)
  return np.where(known & inside, AGREE, np.where(known & outside, DISAGREE, CANNOT_TELL)).astype(np.int8)


def p_value(effect, se, df, lo, hi, family: int = 1) -> np.ndarray:
  """The two-sided p of the test that the effect lies on the region's boundary nearest the estimate, × family
  (Bonferroni), capped at 1: it is below alpha exactly when `decide` says +1 or −1."""
  effect = np.asarray(effect, dtype=float)
  se = np.asarray(se, dtype=float)
  distance = np.minimum(np.abs(effect - lo), np.abs(effect - hi))
  with np.errstate(divide='ignore', invalid='ignore'):
    p = 2.0 * _t_sf(distance / se, df)
  p = np.where(se == 0, np.where(distance > 0, 0.0, 1.0), p)
  return np.minimum(1.0, p * family)


def all_of(ternary, axis: int = -1) -> np.ndarray:
  """Three-valued AND: −1 if any leaf disagrees, +1 if every leaf agrees, else 0."""
  t = np.asarray(ternary)
  return np.where((t == DISAGREE).any(axis=axis), DISAGREE,
                  np.where((t == AGREE).all(axis=axis), AGREE, CANNOT_TELL)).astype(np.int8)


def any_of(ternary, axis: int = -1) -> np.ndarray:
  """Three-valued OR: +1 if any leaf agrees, −1 if every leaf disagrees, else 0."""
  t = np.asarray(ternary)
  return np.where((t == AGREE).any(axis=axis), AGREE,
                  np.where((t == DISAGREE).all(axis=axis), DISAGREE, CANNOT_TELL)).astype(np.int8)


def fmt(value: float | None, digits: int = 4) -> str:
  if value is None or not math.isfinite(value):
    return 'n/a' if value is None or math.isnan(value) else ('∞' if value > 0 else '−∞')
  return f'{value:.{digits}g}'
