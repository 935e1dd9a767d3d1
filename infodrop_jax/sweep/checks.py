"""The check kinds a sweep config's `expect` (the paper's claims) and `preconditions` (what makes the setup able to
test them) name, and their evaluation into "agrees / disagrees / cannot tell".

Each kind is one class below, registered in `KINDS`: which spec fields it takes, how it reads its comparisons
("leaves") from the finished runs, the region its effect must lie in, how its leaves combine, and how it states its
claim. A new kind is one class. The statistics are in `infodrop_jax.sweep.inference`: every leaf is an effect with
its standard error and degrees of freedom; a check of m leaves reads simultaneous intervals at 1 − 0.05/m; a leaf
agrees when its interval lies inside the region, disagrees when outside, else cannot tell.

Fields every spec may have: check (the kind), metric (a results.csv column, or 'prefix:*' for every such column),
description, where ('axis=label, ...' selects runs), along (the x axis; default report.x), mode ('all' | 'any'
over the expanded metrics), tolerance (a margin in the metric's units, default 0). A precondition also has `why`
(what it makes testable), `optional` (True: runs without its columns give "not measured", and it gates nothing
then) and `gates` (the claims it gates; default every claim).
"""
from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar

import ml_collections
import numpy as np

from infodrop_jax.sweep import inference
from infodrop_jax.sweep.inference import AGREE, CANNOT_TELL, DISAGREE, fmt
from infodrop_jax.sweep.results import number
from infodrop_jax.sweep.spec import SweepError, axes_of, sanitize

COMMON_FIELDS = ('check', 'metric', 'description', 'where', 'along', 'mode', 'tolerance')
PRECONDITION_FIELDS = ('why', 'optional', 'gates')
WORDS = {AGREE: 'agrees', DISAGREE: 'disagrees', CANNOT_TELL: 'cannot tell'}


# --- what a check reads ----------------------------------------------------------------------------------------


@dataclasses.dataclass
class Evidence:
  """What the checks read: every point's row (results.csv; numbers as text or floats), the sweep config, and the
  report's directory (the information-plane arrays the report wrote or a committed report holds)."""
  config: ml_collections.ConfigDict
  rows: list[dict[str, Any]]
  workdir: str = ''
  _plane: dict[str, np.ndarray] | None = None

  @property
  def runs(self) -> list[dict[str, Any]]:
    return [r for r in self.rows if r.get('status') == 'done']

  def columns(self) -> set[str]:
    return {c for r in self.runs for c, v in r.items() if number(v) is not None}

  def plane(self) -> dict[str, np.ndarray]:
    """{method/layer/field: array} of W/<name>_information_plane.npz (training examples' curves, seeds × captures)."""
    if self._plane is None:
      path = os.path.join(self.workdir, f'{sanitize(str(self.config.name) or "sweep")}_information_plane.npz')
      self._plane = {}
      if self.workdir and os.path.isfile(path):
        with np.load(path) as z:
          self._plane = {k: z[k] for k in z.files}
    return self._plane


def where_of(spec: Mapping[str, Any]) -> dict[str, str]:
  out = {}
  for part in filter(None, (p.strip() for p in str(spec.get('where', '') or '').split(','))):
    key, _, value = part.partition('=')
    out[key.strip()] = value.strip()
  return out


def _matches(row: Mapping[str, Any], where: Mapping[str, str]) -> bool:
  return all(str(row.get(k)) == str(v) for k, v in where.items())


def _values(runs: Iterable[Mapping[str, Any]], metric: str) -> np.ndarray:
  values = [number(r.get(metric)) for r in runs]
  return np.array([v for v in values if v is not None and math.isfinite(v)], dtype=float)


def x_labels(config: ml_collections.ConfigDict, x: str) -> list[str]:
  for name, _, _, labels, _ in axes_of(config):
    if name == x:
      return list(labels)
  return ['']


# --- one comparison --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Leaf:
  """One comparison: the effect, its standard error and degrees of freedom, the region the claim puts it in."""
  label: str
  effect: float
  se: float
  df: float
  lo: float
  hi: float
  test: str
  sizes: str = ''
  incomplete: bool = False  # some selected run has not finished: the leaf may disagree but not agree
  n: int = 0  # seeds (per group) behind the standard error; 0: a measured Monte Carlo error
  ternary: int = CANNOT_TELL
  low: float = math.nan
  high: float = math.nan
  p: float = math.nan

  def decide(self, family: int, rule: Callable[..., np.ndarray] = inference.decide) -> None:
    t = int(rule(self.effect, self.se, self.df, self.lo, self.hi, family))
    self.ternary = CANNOT_TELL if (self.incomplete and t == AGREE) else t
    h = float(inference.half_width(self.se, self.df, family))
    self.low, self.high = self.effect - h, self.effect + h
    self.p = float(inference.p_value(self.effect, self.se, self.df, self.lo, self.hi, family))

  def to_decide(self, family: int) -> str:
    """What would decide this comparison if its effect and spread stayed at their estimates: the seeds (per group)
    whose interval clears the nearest boundary (its standard error shrinking as 1/sqrt(n), its degrees of freedom
    growing in proportion to n − 1), or how much smaller a Monte Carlo error must be."""
    boundaries = [b for b in (self.lo, self.hi) if math.isfinite(b)]
    if not (math.isfinite(self.effect) and math.isfinite(self.se) and self.se > 0 and boundaries):
      return ''
    distance = min(abs(self.effect - b) for b in boundaries)
    if distance == 0:
      return f'{self.label}: its estimate is on the boundary, so no number of seeds decides it'
    if not self.n:
      ratio = float(inference.half_width(self.se, math.inf, family)) / distance
      return f'{self.label}: a Monte Carlo error {ratio:.2g}× smaller'
    df_per_seed = (self.df / (self.n - 1)) if self.n > 1 and math.isfinite(self.df) else 1.0
    for n in range(self.n + 1, 100_001):
      se = self.se * math.sqrt(self.n / n)
      if float(inference.half_width(se, df_per_seed * (n - 1), family)) < distance:
        return f'{self.label}: about {n} seeds{" per group" if self.test == "Welch t" else ""}'
    return f'{self.label}: more than 100 000 seeds'

  def text(self) -> str:
    if not math.isfinite(self.effect):
      return f'{self.label}: no value ({self.sizes or "no finished run"})'
    if not math.isfinite(self.se):
      return f'{self.label}: {fmt(self.effect)}, no standard error ({self.sizes}): cannot tell'
    df = '' if not math.isfinite(self.df) else f', df {self.df:.3g}'
    interval = f'[{fmt(self.low)}, {fmt(self.high)}]' if self.se > 0 else '(exact)'
    note = '; a run not finished' if self.incomplete else ''
    return (f'{self.label}: {fmt(self.effect)} {interval} ({self.test}{df}, {self.sizes}, p = {fmt(self.p, 2)}'
            f'{note})')


def _leaf(label: str, estimate, region: tuple[float, float], test: str, sizes: str,
          incomplete: bool = False, n: int = 0) -> Leaf:
  effect, se, df = (float(np.asarray(v)) for v in estimate)
  return Leaf(label, effect, se, df, region[0], region[1], test, sizes, incomplete, n)


def _missing(label: str, region: tuple[float, float], sizes: str = '', incomplete: bool = False) -> Leaf:
  return Leaf(label, math.nan, math.nan, math.nan, region[0], region[1], '', sizes, incomplete)


def _named(spec: Mapping[str, Any], field: str, metric: str) -> str:
  """The column `spec[field]` names for `metric`: a '*' in it stands for what the '*' of spec['metric'] matched
  (metric 'ixz_m:*' → 'ixz_m:hidden3' makes stderr 'ixz_m_stderr:*' → 'ixz_m_stderr:hidden3')."""
  pattern = str(spec['metric'])
  suffix = metric[len(pattern) - 1:] if pattern.endswith('*') else ''
  return str(spec[field]).replace('*', suffix)


def _with(spec: Mapping[str, Any]) -> str:
  return f' with {spec["where"]}' if spec.get('where') else ''


def _region_text(lo: float, hi: float) -> str:
  if lo == -math.inf:
    return f'< {fmt(hi)}'
  if hi == math.inf:
    return f'> {fmt(lo)}'
  return f'in ({fmt(lo)}, {fmt(hi)})'


# --- the kinds -------------------------------------------------------------------------------------------------


class Kind:
  """A check kind: `leaves` reads the comparisons of one metric; `combine` joins their three-valued outcomes;
  `estimate` and `region` are what the simulation tests drive with arrays (seeds on the last axis)."""
  name: ClassVar[str] = ''
  fields: ClassVar[tuple[str, ...]] = ()  # beyond COMMON_FIELDS
  required: ClassVar[tuple[str, ...]] = ()
  summary: ClassVar[str] = ''

  def validate(self, name: str, spec: Mapping[str, Any]) -> None:
    del name, spec

  def columns(self, evidence: Evidence, spec: Mapping[str, Any]) -> set[str]:
    """The columns this check can read (a metric outside them is "not measured")."""
    del spec
    return evidence.columns()

  def region(self, spec: Mapping[str, Any]) -> tuple[float, float]:
    raise NotImplementedError

  def estimate(self, *groups):
    raise NotImplementedError

  def leaves(self, evidence: Evidence, spec: Mapping[str, Any], metric: str) -> list[Leaf]:
    raise NotImplementedError

  def combine(self, ternary: np.ndarray, spec: Mapping[str, Any]) -> np.ndarray:
    del spec
    return inference.all_of(ternary)

  # How one leaf decides: its interval against the region (`inference.decide`).
  decide = staticmethod(inference.decide)

  def claim(self, spec: Mapping[str, Any]) -> str:
    raise NotImplementedError


def _tolerance(spec: Mapping[str, Any]) -> float:
  return float(spec.get('tolerance', 0.0) or 0.0)


def _x(evidence: Evidence, spec: Mapping[str, Any]) -> str:
  return str(spec.get('along', '') or evidence.config.report.x)


def _xs(evidence: Evidence, spec: Mapping[str, Any]) -> list[str]:
  x, where = _x(evidence, spec), where_of(spec)
  return [where[x]] if x in where else x_labels(evidence.config, x)


class _Groups:
  """Welch comparisons of groups of runs selected by labels."""

  @staticmethod
  def group(evidence: Evidence, metric: str, labels: Mapping[str, str]) -> tuple[np.ndarray, bool]:
    """(finite values of the finished runs with these labels, whether a run with them is unfinished)."""
    selected = [r for r in evidence.rows if _matches(r, labels)]
    return (_values([r for r in selected if r.get('status') == 'done'], metric),
            any(r.get('status') != 'done' for r in selected))

  @classmethod
  def welch_leaf(cls, evidence: Evidence, metric: str, label: str, a: Mapping[str, str], b: Mapping[str, str],
                 region: tuple[float, float]) -> Leaf:
    va, ia = cls.group(evidence, metric, a)
    vb, ib = cls.group(evidence, metric, b)
    sizes = f'n = {va.size} vs {vb.size}'
    if not va.size or not vb.size:
      return _missing(label, region, sizes, ia or ib)
    return _leaf(label, inference.welch(va, vb), region, 'Welch t', sizes, ia or ib, min(va.size, vb.size))


class Le(Kind, _Groups):
  name = 'le'
  fields = ('by', 'a', 'b')
  required = ('by', 'a', 'b')
  summary = 'metric(by=a) − metric(by=b) < tolerance at every x (Welch t over seeds)'

  def region(self, spec):
    return -math.inf, _tolerance(spec)

  def estimate(self, a, b):
    return inference.welch(a, b)

  def leaves(self, evidence, spec, metric):
    x, where, by = _x(evidence, spec), where_of(spec), str(spec['by'])
    return [self.welch_leaf(evidence, metric, f'{x}={v}', {**where, x: v, by: str(spec['a'])},
                            {**where, x: v, by: str(spec['b'])}, self.region(spec)) for v in _xs(evidence, spec)]

  def claim(self, spec):
    by = spec['by']
    return f'{spec["metric"]} at {by}={spec["a"]} − at {by}={spec["b"]} {_region_text(*self.region(spec))}'


class Increasing(Kind, _Groups):
  name = 'increasing'
  summary = 'metric at the last x − at the first x > tolerance (Welch t; the endpoints decide)'
  sign = 1.0

  def region(self, spec):
    tolerance = _tolerance(spec)
    return (tolerance, math.inf) if self.sign > 0 else (-math.inf, -tolerance if tolerance else 0.0)

  def estimate(self, last, first):
    return inference.welch(last, first)

  def leaves(self, evidence, spec, metric):
    x, where, xs = _x(evidence, spec), where_of(spec), _xs(evidence, spec)
    if len(xs) < 2:
      return [_missing(f'{x}: one value', self.region(spec))]
    return [self.welch_leaf(evidence, metric, f'{x}={xs[-1]} − {x}={xs[0]}', {**where, x: xs[-1]},
                            {**where, x: xs[0]}, self.region(spec))]

  def claim(self, spec):
    return f'{spec["metric"]} at the last − at the first {spec.get("along") or "x"} {_region_text(*self.region(spec))}'


class Decreasing(Increasing):
  name = 'decreasing'
  summary = 'metric at the last x − at the first x < −tolerance (Welch t; the endpoints decide)'
  sign = -1.0


class InteriorMin(Kind, _Groups):
  name = 'interior_min'
  summary = ('some interior x has a lower metric than both ends: for some j, v_j − v_first < 0 and v_j − v_last < 0 '
             '(Welch t each; three values of x at least)')

  def region(self, spec):
    del spec
    return -math.inf, 0.0

  def estimate(self, inner, end):
    return inference.welch(inner, end)

  def leaves(self, evidence, spec, metric):
    x, where, xs = _x(evidence, spec), where_of(spec), _xs(evidence, spec)
    if len(xs) < 3:
      return [_missing(f'{x}: fewer than three values', self.region(spec))] * 2
    return [self.welch_leaf(evidence, metric, f'{x}={v} − {x}={end}', {**where, x: v}, {**where, x: end},
                            self.region(spec)) for v in xs[1:-1] for end in (xs[0], xs[-1])]

  def combine(self, ternary, spec):
    t = np.asarray(ternary)
    pairs = t.reshape(t.shape[:-1] + (t.shape[-1] // 2, 2))
    return inference.any_of(inference.all_of(pairs, axis=-1))

  def claim(self, spec):
    return f'{spec["metric"]} at some interior {spec.get("along") or "x"} − at each end < 0'


class RangeLe(Kind, _Groups):
  """An equivalence test: every pair of x values differs by less than a margin the config names with its reason."""
  name = 'range_le'
  fields = ('margin', 'relative_margin', 'margin_reason')
  required = ('margin_reason',)
  summary = ('every pair of x values differs by less than ±margin (an equivalence test: each Welch interval inside '
             '(−margin, margin)); margin, or relative_margin × |the mean over all runs|, with margin_reason')

  def validate(self, name, spec):
    if ('margin' in spec) == ('relative_margin' in spec):
      raise SweepError(f'{name}: range_le needs exactly one of margin (metric units) or relative_margin '
                       f'(a fraction of the mean), with margin_reason.')

  def margin(self, spec, values: np.ndarray | None = None) -> float:
    if 'margin' in spec:
      return float(spec['margin'])
    if values is None or not values.size:
      return math.nan
    return float(spec['relative_margin']) * float(abs(values.mean()))

  def region(self, spec, values=None):
    m = self.margin(spec, values)
    return -m, m

  def estimate(self, a, b):
    return inference.welch(a, b)

  def leaves(self, evidence, spec, metric):
    x, where, xs = _x(evidence, spec), where_of(spec), _xs(evidence, spec)
    # The relative margin takes the mean over every run as known: its own error is a small part of the margin.
    region = self.region(spec, _values([r for r in evidence.runs if _matches(r, where)], metric))
    if len(xs) < 2:
      return [_missing(f'{x}: one value', region)]
    return [self.welch_leaf(evidence, metric, f'{x}={xs[j]} − {x}={xs[i]}', {**where, x: xs[j]}, {**where, x: xs[i]},
                            region) for i in range(len(xs)) for j in range(i + 1, len(xs))]

  def claim(self, spec):
    margin = (f'{fmt(float(spec["margin"]))}' if 'margin' in spec
              else f'{100 * float(spec["relative_margin"]):g} % of its mean')
    return (f'{spec["metric"]} differs between every two {spec.get("along") or "x"} by less than ± {margin} '
            f'({spec["margin_reason"]})')


class Above(Kind):
  name = 'above'
  fields = ('reference', 'factor')
  required = ('reference',)
  summary = ('metric − factor × reference > tolerance at every x: the per-run difference (paired within each run), '
             'one-sample t over seeds')

  def columns(self, evidence, spec):
    columns = evidence.columns()
    return columns if str(spec['reference']) in columns else set()

  def region(self, spec):
    return _tolerance(spec), math.inf

  def estimate(self, d):
    return inference.one_sample(d)

  def leaves(self, evidence, spec, metric):
    x, where = _x(evidence, spec), where_of(spec)
    factor = float(spec.get('factor', 1.0) or 1.0)
    out = []
    for v in _xs(evidence, spec):
      selected = [r for r in evidence.rows if _matches(r, {**where, x: v})]
      pairs = [(number(r.get(metric)), number(r.get(str(spec['reference'])))) for r in selected
               if r.get('status') == 'done']
      d = np.array([m - factor * ref for m, ref in pairs if m is not None and ref is not None
                    and math.isfinite(m) and math.isfinite(ref)])
      incomplete = any(r.get('status') != 'done' for r in selected)
      label = f'{x}={v}' if x else 'all runs'
      if not d.size:
        out.append(_missing(label, self.region(spec), 'no run with both', incomplete))
      else:
        out.append(_leaf(label, self.estimate(d), self.region(spec), 'paired t', f'n = {d.size}', incomplete,
                         d.size))
    return out

  def claim(self, spec):
    factor = float(spec.get('factor', 1.0) or 1.0)
    times = f'{factor:g} × ' if factor != 1.0 else ''
    return f'{spec["metric"]} − {times}{spec["reference"]} (per run) {_region_text(*self.region(spec))}'


class AtLeast(Kind):
  """A bound every selected run must satisfy, each with its own Monte Carlo error (`stderr`: the column of the
  metric's standard error; without it the value counts as exact, and the report says so)."""
  name = 'at_least'
  fields = ('value', 'stderr', 'reference')
  required = ('value',)
  summary = ('metric (− reference) > value − tolerance in every run `where` selects, each with its own Monte Carlo '
             'standard error (`stderr` column; none: exact)')

  def columns(self, evidence, spec):
    columns = evidence.columns()
    return columns if not spec.get('reference') or str(spec['reference']) in columns else set()

  def region(self, spec):
    return float(spec['value']) - _tolerance(spec), math.inf

  def estimate(self, value, stderr):
    return inference.measured(value, stderr)

  def leaves(self, evidence, spec, metric):
    where = where_of(spec)
    stderr = _named(spec, 'stderr', metric) if spec.get('stderr') else ''
    reference = str(spec.get('reference', '') or '')
    out = []
    for r in (r for r in evidence.rows if _matches(r, where)):
      label = str(r.get('point', ''))
      value, ref = number(r.get(metric)), number(r.get(reference)) if reference else 0.0
      if r.get('status') != 'done':
        out.append(_missing(label, self.region(spec), 'not finished', True))
        continue
      if value is None or ref is None or not math.isfinite(value - ref):
        out.append(_missing(label, self.region(spec), f'no finite {metric}'))
        continue
      se = number(r.get(stderr)) if stderr else 0.0
      se = math.nan if se is None else se
      test = f'z, Monte Carlo error {stderr}' if stderr else 'exact (no Monte Carlo error recorded)'
      out.append(_leaf(label, self.estimate(value - ref, se), self.region(spec), test, 'one run'))
    return out

  def claim(self, spec):
    ref = f' − {spec["reference"]}' if spec.get('reference') else ''
    return f'{spec["metric"]}{ref} {_region_text(*self.region(spec))} in every run{_with(spec)}'


class AtMost(AtLeast):
  name = 'at_most'
  summary = 'as at_least, metric (− reference) < value + tolerance'

  def region(self, spec):
    return -math.inf, float(spec['value']) + _tolerance(spec)


class Within(AtLeast):
  """Closeness to a known number: the interval of every run must lie inside (low, high), margins named with their
  reason, so that "not different" never reads as "agrees"."""
  name = 'within'
  fields = ('low', 'high', 'stderr', 'reference', 'margin_reason')
  required = ('low', 'high', 'margin_reason')
  summary = 'as at_least, low < metric (− reference) < high (two-sided; margin_reason says why these margins)'

  def region(self, spec):
    return float(spec['low']), float(spec['high'])

  def claim(self, spec):
    return (f'{spec["metric"]} in ({fmt(float(spec["low"]))}, {fmt(float(spec["high"]))}) in every run'
            f'{_with(spec)} ({spec["margin_reason"]})')


class WindowFall(Kind):
  """Compression in the information plane, windows fixed in the sweep config before the curves are seen: per seed,
  the mean I(X;Z) over the `early` epochs minus the mean over the `late` epochs on the training examples (the test
  examples' curves share the weights and are shown, not counted); a one-sample t over seeds for each value of x.
  `direction='fall'`: the claim is a fall (compression); 'rise': a late rise; 'flat': no compression, an
  equivalence test (the fall within ± `margin` nats, named with its `margin_reason`)."""
  name = 'window_fall'
  fields = ('early', 'late', 'direction', 'margin', 'margin_reason')
  required = ('early', 'late')
  summary = ('per seed, mean I(X;Z) in the `early` epochs − in the `late` epochs (windows fixed in the config; '
             'training examples), one-sample t over seeds: > 0 (direction fall), < 0 (rise) or within ± margin '
             '(flat, with margin_reason)')

  def validate(self, name, spec):
    for field in ('early', 'late'):
      w = tuple(spec[field])
      if len(w) != 2 or not w[0] <= w[1]:
        raise SweepError(f'{name}: {field}={w!r}: expected (first epoch, last epoch).')
    direction = str(spec.get('direction', 'fall'))
    if direction not in ('fall', 'rise', 'flat'):
      raise SweepError(f'{name}: direction={spec.get("direction")!r}: expected "fall", "rise" or "flat".')
    if (direction == 'flat') != ('margin' in spec and 'margin_reason' in spec):
      raise SweepError(f'{name}: direction "flat" (and only it) takes a margin (nats) and its margin_reason.')

  def columns(self, evidence, spec):
    del spec
    return {k.split('/')[1] for k in evidence.plane() if k.endswith('/ixz')}

  def region(self, spec):
    direction = str(spec.get('direction', 'fall'))
    if direction == 'flat':
      return -float(spec['margin']), float(spec['margin'])
    return (0.0, math.inf) if direction == 'fall' else (-math.inf, 0.0)

  def estimate(self, falls):
    return inference.one_sample(falls)

  @staticmethod
  def falls(epochs: np.ndarray, ixz: np.ndarray, early, late) -> np.ndarray:
    """Each seed's mean I(X;Z) over the early window minus over the late window (captures inside each, inclusive)."""
    e = (epochs >= early[0]) & (epochs <= early[1])
    l = (epochs >= late[0]) & (epochs <= late[1])
    if not e.any() or not l.any():
      return np.array([])
    return ixz[:, e].mean(axis=1) - ixz[:, l].mean(axis=1)

  def leaves(self, evidence, spec, metric):
    plane, x = evidence.plane(), _x(evidence, spec)
    out = []
    for v in _xs(evidence, spec):
      key = next((k for k in (f'{v}/{metric}', *[k.rsplit('/', 1)[0] for k in plane
                                                   if k.startswith(f'{v} (') and k.endswith(f'/{metric}/ixz')])
                  if f'{k}/ixz' in plane), None)
      label = f'{x}={v}'
      if key is None:
        out.append(_missing(label, self.region(spec), 'no captured plane'))
        continue
      d = self.falls(plane[f'{key}/epoch'], plane[f'{key}/ixz'], tuple(spec['early']), tuple(spec['late']))
      d = d[np.isfinite(d)]
      if not d.size:
        out.append(_missing(label, self.region(spec), 'no capture in a window'))
        continue
      out.append(_leaf(label, self.estimate(d), self.region(spec), 'one-sample t', f'{d.size} seeds', n=d.size))
    return out

  def combine(self, ternary, spec):
    # 'any': some value of x shows it (e.g. "compression in some setting"), over the leaves of one layer.
    any_x = str(spec.get('mode', 'all') or 'all') == 'any'
    return inference.any_of(ternary) if any_x else inference.all_of(ternary)

  def claim(self, spec):
    early, late = tuple(spec['early']), tuple(spec['late'])
    direction = str(spec.get('direction', 'fall'))
    sign = {'fall': '> 0 (compression)', 'rise': '< 0 (a late rise)'}.get(direction) or (
        f'within ± {fmt(float(spec.get("margin", math.nan)))} nats (no compression; {spec.get("margin_reason")})')
    return (f'I(X;Z) of `{spec["metric"]}` on the training examples, mean over epochs {early[0]:g}–{early[1]:g} − '
            f'over {late[0]:g}–{late[1]:g}, {sign}')


class StableIn(Kind):
  """A precondition of an estimator: doubling its sample (e.g. M of the mixture estimate) moves each run's value by
  no more than its noise, |Δ| ≤ 1.96·SE(Δ) (at 1 − 0.05/m over the m runs). `doubled` names the column of the value
  at the doubled sample, `stderr` / `doubled_stderr` their standard errors."""
  name = 'stable_in_sample'
  fields = ('doubled', 'stderr', 'doubled_stderr')
  required = ('doubled', 'stderr', 'doubled_stderr')
  summary = ('per run, Δ = metric at the doubled sample − at the sample: agrees when every interval of Δ contains 0 '
             '(a precondition: "no detectable move")')

  def columns(self, evidence, spec):
    columns = evidence.columns()
    return {c for c in columns if all(_named(spec, f, c) in columns
                                      for f in ('doubled', 'stderr', 'doubled_stderr'))}

  def region(self, spec):
    del spec
    return 0.0, 0.0  # p is then the test of Δ = 0

  def estimate(self, delta, se):
    return inference.measured(delta, se)

  def leaves(self, evidence, spec, metric):
    doubled, se1, se2 = (_named(spec, f, metric) for f in ('doubled', 'stderr', 'doubled_stderr'))
    out = []
    for r in evidence.runs:
      values = [number(r.get(c)) for c in (metric, doubled, se1, se2)]
      label = f'{r.get("point")}'
      if any(v is None or not math.isfinite(v) for v in values):
        out.append(_missing(label, self.region(spec), 'not measured'))
        continue
      a, b, s1, s2 = values
      out.append(_leaf(label, self.estimate(b - a, math.hypot(s1, s2)), self.region(spec), 'z', 'one run'))
    return out

  @staticmethod
  def decide(effect, se, df, lo, hi, family=1, alpha=inference.ALPHA):
    """+1 where the interval of Δ contains 0, −1 where it excludes 0, 0 where Δ or its error is unknown."""
    del lo, hi
    h = inference.half_width(se, df, family, alpha)
    effect = np.asarray(effect, dtype=float)
    known = np.isfinite(effect) & np.isfinite(h)
    return np.where(known, np.where(np.abs(effect) <= h, AGREE, DISAGREE), CANNOT_TELL).astype(np.int8)

  def claim(self, spec):
    return f'doubling the sample moves {spec["metric"]} by less than its noise in every run'


KINDS: dict[str, Kind] = {k.name: k for k in (Le(), Increasing(), Decreasing(), RangeLe(), InteriorMin(), Above(),
                                              AtLeast(), AtMost(), Within(), WindowFall(), StableIn())}
CHECKS = tuple(KINDS)


OVERFIT_GAP = 0.005


def baseline_overfits(where: str, gates: Sequence[str] = (), gap: float = OVERFIT_GAP) -> dict[str, Any]:
  """The precondition of a regulariser's claim: the runs `where` selects (the baseline) have a test error above
  their training error by more than `gap`, per run (paired t over seeds). Without that gap a regulariser has
  nothing to improve that a few seeds could show."""
  return dict(check='above', metric='test_error_d', reference='train_error_d', tolerance=gap, where=where,
              gates=tuple(gates),
              description=f'the baseline ({where}) overfits: test − training error (D) > {100 * gap:g} points',
              why=('a regulariser can only lower a test error that exceeds the training error; differences between '
                   f'methods of a few tenths of a point need a gap of more than {100 * gap:g} points to show'))


# --- a check's outcome -----------------------------------------------------------------------------------------


@dataclasses.dataclass
class Outcome:
  name: str
  spec: dict[str, Any]
  outcome: int  # the test's own verdict
  leaves: list[tuple[str, Leaf]]  # (metric, leaf)
  family: int
  measured: bool = True
  gated: list[str] = dataclasses.field(default_factory=list)  # why a precondition makes it "cannot tell"

  @property
  def final(self) -> int:
    return CANNOT_TELL if self.gated else self.outcome

  @property
  def word(self) -> str:
    return WORDS[self.final] if self.measured else 'not measured'

  def headline(self) -> tuple[str, Leaf] | None:
    """The leaf that decides: the weakest agreeing one of an 'all', the strongest of an 'any', the strongest
    disagreeing one; of a claim that cannot tell, the least decided one of an 'all', the nearest to agreeing of an
    'any'."""
    if not self.leaves:
      return None
    same = [ml for ml in self.leaves if ml[1].ternary == self.outcome]
    if not same:
      return self.leaves[0]
    strongest_first = sorted(same, key=lambda ml: ml[1].p if math.isfinite(ml[1].p) else math.inf)
    if self.outcome == CANNOT_TELL:
      # What would decide: for 'all', the least decided comparison; for 'any', the nearest to agreeing.
      any_mode = str(self.spec.get('mode', 'all') or 'all') == 'any' or self.spec.get('check') == 'interior_min'
      return strongest_first[0] if any_mode else strongest_first[-1]
    weakest = str(self.spec.get('mode', 'all') or 'all') == 'all' and self.outcome == AGREE
    return strongest_first[-1] if weakest else strongest_first[0]


def _spec_dict(spec) -> dict[str, Any]:
  return dict(spec.to_dict()) if isinstance(spec, ml_collections.ConfigDict) else dict(spec)


def expand(metric: str, columns: Iterable[str]) -> list[str]:
  """The columns `metric` names: itself, or every column with its prefix when it ends in '*'."""
  if metric.endswith('*'):
    return sorted(c for c in columns if c.startswith(metric[:-1]))
  return [metric]


def validate(config: ml_collections.ConfigDict) -> None:
  """Every claim and precondition of `config` is one a kind can decide (raises SweepError naming the field)."""
  axis_names = [a[0] for a in axes_of(config)]
  claims = set(config.expect.keys())
  for section in ('expect', 'preconditions'):
    for name, raw in (config.get(section) or {}).items():
      spec = _spec_dict(raw)
      kind = KINDS.get(str(spec.get('check')))
      if kind is None:
        raise SweepError(f'{section} {name}: check={spec.get("check")!r}; expected one of {CHECKS}.')
      allowed = set(COMMON_FIELDS) | set(kind.fields) | (set(PRECONDITION_FIELDS) if section == 'preconditions'
                                                          else set())
      unknown = sorted(set(spec) - allowed)
      if unknown:
        raise SweepError(f'{section} {name}: unknown field(s) {unknown} for check {kind.name!r}; expected some of '
                         f'{sorted(allowed)}.')
      missing = [f for f in ('metric', *kind.required) if f not in spec]
      if missing:
        raise SweepError(f'{section} {name}: check {kind.name!r} needs {missing}.')
      if str(spec.get('mode', 'all') or 'all') not in ('all', 'any'):
        raise SweepError(f'{section} {name}: mode={spec.get("mode")!r}; expected "all" or "any".')
      unknown_axes = [k for k in where_of(spec) if k not in axis_names]
      if unknown_axes:  # it would match no row, and the check would stay 'cannot tell' for ever
        raise SweepError(f'{section} {name}: where={spec.get("where")!r} names {unknown_axes}, which are not axes '
                         f'of the sweep ({axis_names}).')
      if section == 'preconditions':
        if not spec.get('why'):
          raise SweepError(f'preconditions {name}: give `why` (what it makes the setup able to test).')
        bad = [g for g in spec.get('gates') or () if g not in claims]
        if bad:
          raise SweepError(f'preconditions {name}: gates={bad} are not claims in expect ({sorted(claims)}).')
      kind.validate(f'{section} {name}', spec)


def evaluate_one(name: str, raw, evidence: Evidence) -> Outcome:
  spec = _spec_dict(raw)
  kind = KINDS[str(spec['check'])]
  columns = kind.columns(evidence, spec)
  metrics = [m for m in expand(str(spec['metric']), columns) if m in columns]
  measured = bool(metrics)
  leaves = [(m, leaf) for m in metrics for leaf in kind.leaves(evidence, spec, m)]
  family = max(1, len(leaves))
  for _, leaf in leaves:
    leaf.decide(family, kind.decide)
  per_metric = [kind.combine(np.array([leaf.ternary for mm, leaf in leaves if mm == m], dtype=np.int8), spec)
                for m in metrics]
  mode = str(spec.get('mode', 'all') or 'all')
  if not per_metric:
    outcome = CANNOT_TELL
  else:
    joined = np.array(per_metric, dtype=np.int8)
    outcome = int(inference.all_of(joined) if mode == 'all' else inference.any_of(joined))
  return Outcome(name, spec, outcome, leaves, family, measured)


@dataclasses.dataclass
class Verdict:
  word: str
  claims: list[Outcome]
  preconditions: list[Outcome]


def evaluate(config: ml_collections.ConfigDict, evidence: Evidence) -> Verdict:
  """Every precondition, then every claim (a claim gated by a precondition that did not agree cannot tell)."""
  validate(config)
  preconditions = [evaluate_one(n, s, evidence) for n, s in sorted((config.get('preconditions') or {}).items())]
  claims = [evaluate_one(n, s, evidence) for n, s in sorted(config.expect.items())]
  for pre in preconditions:
    if pre.final == AGREE or (not pre.measured and pre.spec.get('optional')):
      continue
    reason = (f'precondition `{pre.name}` ' + ('not measured' if not pre.measured else WORDS[pre.final]))
    for claim in claims:
      if claim.name in (pre.spec.get('gates') or [c.name for c in claims]):
        claim.gated.append(reason)
  outcomes = [c.final for c in claims]
  if not outcomes:
    return Verdict('no check declared', claims, preconditions)
  agree, disagree = outcomes.count(AGREE), outcomes.count(DISAGREE)
  unknown = len(outcomes) - agree - disagree
  word = ('agree' if agree == len(outcomes) else 'cannot tell' if unknown == len(outcomes)
          else 'partly' if agree else 'disagree')
  return Verdict(f'{word} ({agree} of {len(outcomes)} checks agree, {disagree} disagree, {unknown} cannot tell)',
                 claims, preconditions)


def describe(outcome: Outcome) -> str:
  """One report line: the verdict, what it tests, and every comparison with its interval, test and p."""
  kind = KINDS[str(outcome.spec['check'])]
  spec = outcome.spec
  description = f' ({spec["description"]})' if spec.get('description') else ''
  why = f' Why: {spec["why"]}.' if spec.get('why') else ''
  if not outcome.measured:
    needs = ', '.join(str(spec[f]) for f in ('metric', 'reference', 'doubled') if spec.get(f))
    return f'`{outcome.name}`{description}: **not measured** (the results have no column {needs}).{why}'
  head = f'`{outcome.name}`{description}: **{outcome.word}**'
  if outcome.gated:
    head += f' ({"; ".join(outcome.gated)}; the test alone: {WORDS[outcome.outcome]})'
  m = outcome.family
  level = f'95 % intervals simultaneous over {m} comparisons (each at {100 * (1 - 0.05 / m):.3g} %)' if m > 1 else (
      '95 % interval')
  mode = str(spec.get('mode', 'all') or 'all')
  metrics = sorted({mm for mm, _ in outcome.leaves})
  join = f'; {"every" if mode == "all" else "some"} metric of {len(metrics)} decides' if len(metrics) > 1 else ''
  parts = []
  for metric in metrics:
    leaves = [leaf for mm, leaf in outcome.leaves if mm == metric]
    parts.append((f'{metric}: ' if len(metrics) > 1 else '') + '; '.join(leaf.text() for leaf in leaves))
  decide = ''
  if outcome.outcome == CANNOT_TELL and outcome.headline():
    need = outcome.headline()[1].to_decide(m)
    decide = f' What would decide, if the effect stays at its estimate: {need}.' if need else ''
  return f'{head}: claim {kind.claim(spec)}; {level}{join}: {" | ".join(parts)}.{decide}{why}'


def docs() -> list[str]:
  """One line per check kind (the README and `CHECKS` documentation)."""
  return [f'{name}: {kind.summary}' for name, kind in KINDS.items()]


def simulate(kind_name: str, spec: Mapping[str, Any], groups_per_leaf: Sequence[Sequence[np.ndarray]],
             combine_metrics: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
  """The outcome (+1 / 0 / −1) of a check of kind `kind_name` on simulated data: `groups_per_leaf[i]` holds the
  arrays (simulations × seeds) of leaf i as the kind's `estimate` takes them. Every leaf goes through the decision
  the reports use (one family over all leaves, then the kind's combine); `combine_metrics` (e.g. any_of) joins
  leaves of several metrics given as a trailing axis of equal groups."""
  kind = KINDS[kind_name]
  estimates = [kind.estimate(*groups) for groups in groups_per_leaf]
  region = kind.region(spec)
  family = len(estimates)
  ternary = np.stack([kind.decide(e, s, d, region[0], region[1], family) for e, s, d in estimates], axis=-1)
  if combine_metrics is not None:
    return combine_metrics(ternary)
  return kind.combine(ternary, spec)
