"""Known answers for the sweep verdicts (`infodrop_jax.sweep.report`): every check kind of `CHECKS` on mean rows whose
verdict is known (pass, fail, ties, tolerance, missing seeds, failed points, one point, NaN), the aggregate word of
`verdicts`, the rendering in report.md, and the committed reports' verdicts recomputed from their results_mean.csv.

Pure Python and no training: the whole file runs in seconds.

Semantics these tests pin, from the code and the presets' `description`s (the checks encode the paper's claims):
  le            a ≤ b (+ tolerance) at every value of x where both are finished: ties agree.
  increasing    the value at the largest x > at the smallest (+ tolerance): the endpoints decide, ties disagree.
  decreasing    the value at the largest x < at the smallest (- tolerance): ties disagree.
  range_le      (max - min) / |mean| ≤ tolerance: a spread equal to the tolerance agrees.
  interior_min  the lowest value is at neither end of x (needs three values of x).
  above         metric > reference (+ tolerance) at every x: ties disagree ("more than chance").
  at_least / at_most   metric ≥ / ≤ value in every run `where` selects (tests/test_sweep_vae_and_planes.py).
A check may disagree on the values of x that finished, but agrees only when every value of x it needs finished
(a failed, NaN or seedless point makes an otherwise agreeing check 'cannot tell').
"""
import importlib.util
import json
import math
import pathlib

import pytest

from infodrop_jax import sweep
from infodrop_jax.sweep import report as sweep_report
from infodrop_jax.sweep.commands import done_record

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
REPORTS = REPO_ROOT / 'reports'
BETAS = (0.01, 0.1, 1.0)  # labels '0.01', '0.1', '1'

AGREE_1 = 'agree (1 of 1 checks agree, 0 disagree, 0 cannot tell)'
DISAGREE_1 = 'disagree (0 of 1 checks agree, 1 disagree, 0 cannot tell)'
CANNOT_TELL_1 = 'cannot tell (0 of 1 checks agree, 0 disagree, 1 cannot tell)'


def _config(checks=None, *, betas=BETAS, dropouts=(), seeds=(0,)):
  """A sweep over beta (and dropout when given), report.x = beta, with `checks` as its `expect`."""
  config = sweep.new_config('t', 'configs/mnist_fc.py')
  if dropouts:
    config.axes.dropout = sweep.axis('model.dropout', dropouts)
  config.axes.beta = sweep.axis('loss.beta', betas)
  config.seeds = seeds
  config.analyze = False
  config.report.x = 'beta'
  for name, spec in (checks or {}).items():
    config.expect[name] = spec
  return config


def _means(values, metric='m', betas=BETAS, **labels):
  """Mean rows as `mean_rows` writes them, one per beta: `values[i]` is the mean at betas[i]; None = no finished
  seed there (mean_rows then writes no `metric:mean` column at all)."""
  rows = []
  for beta, value in zip(betas, values):
    row = {**labels, 'beta': sweep.label_of(beta), 'seeds': 1, 'seeds_done': 0 if value is None else 1}
    if value is not None:
      row[f'{metric}:mean'] = value
    rows.append(row)
  return rows


def _merge(*series):
  """Several `_means` series of the same betas as one list of rows (columns of the same beta merged)."""
  merged = [dict(row) for row in series[0]]
  for rows in series[1:]:
    for out, row in zip(merged, rows):
      out.update({k: v for k, v in row.items() if k.endswith(':mean')})
  return merged


def _with_std(rows, stds):
  """`rows` with `m:std` set to stds[i] in row i (the seeds' spread that `within_spread_cannot_tell` reads)."""
  for row, std in zip(rows, stds):
    row['m:std'] = std
  return rows


def _one(spec, means, **config_kwargs):
  """(overall verdict, the check's line) of a sweep whose only check is `c`."""
  verdict, lines = sweep.verdicts(_config({'c': spec}, **config_kwargs), means)
  assert len(lines) == 1
  return verdict, lines[0]


def test_this_checkout_is_the_package_under_test():
  # A mutation run in a copy of the tree must test the copy's code, not an installed one.
  assert pathlib.Path(sweep_report.__file__).resolve().is_relative_to(REPO_ROOT)
  assert sweep.CHECKS == ('le', 'increasing', 'decreasing', 'range_le', 'interior_min', 'above', 'at_least', 'at_most')


# --- le ---------------------------------------------------------------------------------------------------------

LE = dict(check='le', metric='m', by='dropout', a='information', b='binary', along='beta')


def _le(info, binary, spec=LE, betas=BETAS):
  means = _means(info, betas=betas, dropout='information') + _means(binary, betas=betas, dropout='binary')
  return _one(spec, means, betas=betas, dropouts=('information', 'binary'))


def _le_with_spread(info, binary, info_std, binary_std):
  rows = _with_std(_means(info, dropout='information') + _means(binary, dropout='binary'), info_std + binary_std)
  return _one({**LE, 'within_spread_cannot_tell': True}, rows, dropouts=('information', 'binary'))


def test_le_within_the_seed_spread_cannot_tell():
  # Fig 3a at width 256: 1.607 ± 0.2 against 1.703 ± 0.071 % is no evidence either way.
  verdict, line = _le_with_spread([0.1, 0.2, 1.607], [0.3, 0.4, 1.703], [0.01, 0.01, 0.2], [0.01, 0.01, 0.071])
  assert verdict == CANNOT_TELL_1
  assert line.endswith("at 3/3 (beta=0.01: 0.1 vs 0.3; beta=0.1: 0.2 vs 0.4; beta=1: 1.607 vs 1.703); within the "
                       "seeds' spread (larger std) at 1 (beta=1: |-0.096| ≤ 0.2)")
  # The same means with small spreads decide: a agrees where every difference is clear.
  assert _le_with_spread([0.1, 0.2, 1.607], [0.3, 0.4, 1.703], [0.01] * 3, [0.01] * 3)[0] == AGREE_1


def test_le_a_clear_difference_the_wrong_way_disagrees_even_beside_unclear_ones():
  assert _le_with_spread([0.1, 0.5, 1.607], [0.3, 0.4, 1.703], [0.01] * 3, [0.01, 0.01, 0.2])[0] == DISAGREE_1
  # Wrong way but within the spread: cannot tell, not disagrees.
  assert _le_with_spread([0.1, 0.2, 1.75], [0.3, 0.4, 1.703], [0.01] * 3, [0.01, 0.01, 0.2])[0] == CANNOT_TELL_1


def test_le_without_the_option_ignores_the_spread():
  rows = _with_std(_means([0.1, 0.2, 1.75], dropout='information') + _means([0.3, 0.4, 1.703], dropout='binary'),
                   [1.0] * 6)
  assert _one(LE, rows, dropouts=('information', 'binary'))[0] == DISAGREE_1


def test_le_agrees_when_a_is_below_b_everywhere():
  assert _le([0.1, 0.2, 0.3], [0.2, 0.3, 0.4]) == (
      AGREE_1, '`c`: **agrees**: m of information ≤ binary at 3/3 '
               '(beta=0.01: 0.1 vs 0.2; beta=0.1: 0.2 vs 0.3; beta=1: 0.3 vs 0.4)')


def test_le_disagrees_when_a_is_above_b_anywhere():
  assert _le([0.1, 0.35, 0.3], [0.2, 0.3, 0.4]) == (
      DISAGREE_1, '`c`: **disagrees**: m of information ≤ binary at 2/3 '
                  '(beta=0.01: 0.1 vs 0.2; beta=0.1: 0.35 vs 0.3; beta=1: 0.3 vs 0.4)')
  # b below a everywhere (the arguments swapped) is the opposite answer, at 0/3.
  assert _le([0.2, 0.3, 0.4], [0.1, 0.2, 0.3])[1].startswith('`c`: **disagrees**: m of information ≤ binary at 0/3 ')


def test_le_ties_agree():
  # ≤, as the presets' descriptions say ("information ≤ binary at every width"): equal errors do not contradict it.
  assert _le([0.2, 0.2, 0.2], [0.2, 0.2, 0.2]) == (
      AGREE_1, '`c`: **agrees**: m of information ≤ binary at 3/3 '
               '(beta=0.01: 0.2 vs 0.2; beta=0.1: 0.2 vs 0.2; beta=1: 0.2 vs 0.2)')


def test_le_tolerance_is_added_to_b():
  spec = {**LE, 'tolerance': 0.25}
  assert _le([0.75, 0.25, 0.25], [0.5, 0.5, 0.5], spec) == (
      AGREE_1, '`c`: **agrees**: m of information ≤ binary + 0.25 at 3/3 '
               '(beta=0.01: 0.75 vs 0.5; beta=0.1: 0.25 vs 0.5; beta=1: 0.25 vs 0.5)')
  verdict, line = _le([0.875, 0.25, 0.25], [0.5, 0.5, 0.5], spec)
  assert verdict == DISAGREE_1 and 'binary + 0.25 at 2/3 ' in line


def test_le_with_one_value_of_x_decides_on_it():
  assert _le([0.3], [0.2], betas=(0.5,)) == (
      DISAGREE_1, '`c`: **disagrees**: m of information ≤ binary at 0/1 (beta=0.5: 0.3 vs 0.2)')
  assert _le([0.2], [0.3], betas=(0.5,))[0] == AGREE_1


def test_le_cannot_tell_without_both_sides():
  assert _le([0.1, 0.2, 0.3], [None, None, None]) == (
      CANNOT_TELL_1, '`c`: **cannot tell**: no finished points with both dropout=information and dropout=binary')
  assert _le([None, 0.2, None], [0.1, None, 0.3])[0] == CANNOT_TELL_1  # never both at the same beta


def test_le_disagrees_on_a_counterexample_even_with_points_missing():
  verdict, line = _le([0.1, 0.5, 0.3], [0.2, 0.3, None])
  assert verdict == DISAGREE_1
  assert line == ('`c`: **disagrees**: m of information ≤ binary at 1/2 (beta=0.01: 0.1 vs 0.2; beta=0.1: 0.5 vs 0.3)')


# --- increasing / decreasing ------------------------------------------------------------------------------------

INC = dict(check='increasing', metric='m', along='beta')
DEC = dict(check='decreasing', metric='m', along='beta')


def test_increasing_agrees_on_a_rise():
  assert _one(INC, _means([0.1, 0.2, 0.3])) == (
      AGREE_1, '`c`: **agrees**: m at beta=0.01: 0.1, at beta=1: 0.3 (all: 0.01: 0.1, 0.1: 0.2, 1: 0.3)')


def test_increasing_disagrees_on_a_fall():
  assert _one(INC, _means([0.3, 0.2, 0.1])) == (
      DISAGREE_1, '`c`: **disagrees**: m at beta=0.01: 0.3, at beta=1: 0.1 (all: 0.01: 0.3, 0.1: 0.2, 1: 0.1)')


def test_increasing_compares_the_endpoints():
  # "larger at the largest beta than at the smallest" (fig2, fig4): the last point decides, the middle does not.
  assert _one(INC, _means([0.2, 0.9, 0.1]))[0] == DISAGREE_1  # up in the middle, ends below the start
  assert _one(INC, _means([0.1, 0.05, 0.2]))[0] == AGREE_1  # down in the middle, ends above the start


def test_increasing_ties_disagree():
  # Strict: equal values at both ends are no increase ("larger at the largest beta").
  assert _one(INC, _means([0.2, 0.2, 0.2])) == (
      DISAGREE_1, '`c`: **disagrees**: m at beta=0.01: 0.2, at beta=1: 0.2 (all: 0.01: 0.2, 0.1: 0.2, 1: 0.2)')
  assert _one(INC, _means([0.2, 0.5, 0.2]))[0] == DISAGREE_1


def test_increasing_tolerance_is_a_margin():
  assert _one({**INC, 'tolerance': 0.25}, _means([0.25, 0.5, 0.5]))[0] == DISAGREE_1  # rise == margin
  assert _one({**INC, 'tolerance': 0.25}, _means([0.25, 0.5, 0.625]))[0] == AGREE_1


def test_decreasing_mirrors_increasing():
  assert _one(DEC, _means([0.3, 0.2, 0.1])) == (
      AGREE_1, '`c`: **agrees**: m at beta=0.01: 0.3, at beta=1: 0.1 (all: 0.01: 0.3, 0.1: 0.2, 1: 0.1)')
  assert _one(DEC, _means([0.1, 0.2, 0.3]))[0] == DISAGREE_1
  assert _one(DEC, _means([0.2, 0.2, 0.2]))[0] == DISAGREE_1  # ties: no decrease
  assert _one(DEC, _means([0.1, 0.0, 0.2]))[0] == DISAGREE_1  # the endpoints decide
  assert _one({**DEC, 'tolerance': 0.25}, _means([0.5, 0.5, 0.25]))[0] == DISAGREE_1
  assert _one({**DEC, 'tolerance': 0.25}, _means([0.625, 0.5, 0.25]))[0] == AGREE_1


def test_increasing_within_the_seed_spread_cannot_tell():
  # Fig 2's question with 3 seeds: 0.684 -> 0.753 in the box, with a std of 0.08 at one end, is no evidence.
  spec = {**INC, 'within_spread_cannot_tell': True}
  verdict, line = _one(spec, _with_std(_means([0.684, 0.7, 0.753]), [0.08, 0.01, 0.02]))
  assert verdict == CANNOT_TELL_1
  assert line == ("`c`: **cannot tell**: m at beta=0.01: 0.684, at beta=1: 0.753 (all: 0.01: 0.684, 0.1: 0.7, "
                  "1: 0.753); within the seeds' spread (larger std): |0.069| ≤ 0.08")
  # The same means with a small spread decide, and say that the change is larger than the spread.
  verdict, line = _one(spec, _with_std(_means([0.684, 0.7, 0.753]), [0.01, 0.5, 0.02]))  # the middle std is ignored
  assert verdict == AGREE_1 and line.endswith("; the change is larger than the seeds' spread (larger std 0.02)")
  # A clear fall disagrees; a fall within the spread cannot tell.
  assert _one(spec, _with_std(_means([0.753, 0.7, 0.684]), [0.01, 0.01, 0.02]))[0] == DISAGREE_1
  assert _one(spec, _with_std(_means([0.753, 0.7, 0.684]), [0.01, 0.01, 0.08]))[0] == CANNOT_TELL_1
  # Without the option the spread is ignored.
  assert _one(INC, _with_std(_means([0.684, 0.7, 0.753]), [0.08, 0.01, 0.02]))[0] == AGREE_1


def test_decreasing_within_the_seed_spread_and_the_tolerance():
  spec = {**DEC, 'within_spread_cannot_tell': True, 'tolerance': 0.25}
  # A fall of 0.375 against a margin of 0.25 is 0.125 beyond it: a std of 0.125 cannot tell, 0.1 decides.
  assert _one(spec, _with_std(_means([1.0, 0.8, 0.625]), [0.125, 0.0, 0.0]))[0] == CANNOT_TELL_1
  assert _one(spec, _with_std(_means([1.0, 0.8, 0.625]), [0.1, 0.0, 0.0]))[0] == AGREE_1
  # A fall of 0.125 is 0.125 short of the margin: clear (std 0.1) disagrees, unclear (std 0.125) cannot tell.
  assert _one(spec, _with_std(_means([1.0, 0.8, 0.875]), [0.1, 0.0, 0.0]))[0] == DISAGREE_1
  assert _one(spec, _with_std(_means([1.0, 0.8, 0.875]), [0.0, 0.0, 0.125]))[0] == CANNOT_TELL_1


@pytest.mark.parametrize('spec', [INC, DEC])
def test_increasing_and_decreasing_cannot_tell_from_one_point(spec):
  assert _one(spec, _means([0.1], betas=(0.5,)), betas=(0.5,)) == (
      CANNOT_TELL_1, '`c`: **cannot tell**: m: fewer than two values of beta finished')
  assert _one(spec, _means([None, 0.2, None]))[0] == CANNOT_TELL_1  # one finished point of three
  assert _one(spec, _means([None, None, None]))[0] == CANNOT_TELL_1  # no point finished


def test_increasing_skips_an_unfinished_middle_point_and_says_so_in_its_list():
  # The endpoints decide 'increasing', so a missing middle value changes nothing; the "all:" list shows it is missing.
  assert _one(INC, _means([0.1, None, 0.3])) == (
      AGREE_1, '`c`: **agrees**: m at beta=0.01: 0.1, at beta=1: 0.3 (all: 0.01: 0.1, 1: 0.3)')
  assert _one(INC, _means([0.1, math.nan, 0.3]))[1] == _one(INC, _means([0.1, None, 0.3]))[1]  # NaN = not finished


def test_along_defaults_to_report_x_and_where_selects_a_series():
  spec = dict(check='increasing', metric='m', where='dropout=information')
  means = _means([0.1, 0.2, 0.3], dropout='information') + _means([0.3, 0.2, 0.1], dropout='binary')
  kwargs = dict(dropouts=('information', 'binary'))
  assert _one(spec, means, **kwargs) == (
      AGREE_1, '`c`: **agrees**: m at beta=0.01: 0.1, at beta=1: 0.3 (all: 0.01: 0.1, 0.1: 0.2, 1: 0.3)')
  assert _one({**spec, 'where': 'dropout=binary'}, means, **kwargs)[0] == DISAGREE_1


# --- range_le -----------------------------------------------------------------------------------------------------

RANGE = dict(check='range_le', metric='m', along='beta')


def test_range_le_agrees_within_the_tolerance():
  # (2 - 1) / 1.5 = 66.7 % of the mean.
  assert _one({**RANGE, 'tolerance': 0.7}, _means([1.0, 1.5, 2.0])) == (
      AGREE_1, '`c`: **agrees**: m varies by 66.7 % of its mean across beta (allowed 70 %)')


def test_range_le_disagrees_beyond_the_tolerance():
  assert _one({**RANGE, 'tolerance': 0.5}, _means([1.0, 1.5, 2.0])) == (
      DISAGREE_1, '`c`: **disagrees**: m varies by 66.7 % of its mean across beta (allowed 50 %)')


def test_range_le_spread_equal_to_the_tolerance_agrees():
  # (3 - 1) / 2 = exactly 1.0: "varies by at most 100 %".
  assert _one({**RANGE, 'tolerance': 1.0}, _means([1.0, 2.0, 3.0])) == (
      AGREE_1, '`c`: **agrees**: m varies by 100.0 % of its mean across beta (allowed 100 %)')


def test_range_le_constant_series_agrees_even_with_no_tolerance():
  assert _one(RANGE, _means([0.5, 0.5, 0.5])) == (
      AGREE_1, '`c`: **agrees**: m varies by 0.0 % of its mean across beta (allowed 0 %)')
  assert _one(RANGE, _means([0.5, 0.5, 0.625]))[0] == DISAGREE_1


def test_range_le_cannot_tell_from_one_point():
  assert _one({**RANGE, 'tolerance': 0.5}, _means([1.0, None, None])) == (
      CANNOT_TELL_1, '`c`: **cannot tell**: m: fewer than two values of beta finished')


# --- interior_min -------------------------------------------------------------------------------------------------

DIP = dict(check='interior_min', metric='m', along='beta')


def test_interior_min_agrees_on_a_dip():
  assert _one(DIP, _means([0.3, 0.1, 0.2])) == (
      AGREE_1, '`c`: **agrees**: m is lowest at beta=0.1 (all: 0.01: 0.3, 0.1: 0.1, 1: 0.2)')


@pytest.mark.parametrize('values,lowest', [([0.1, 0.2, 0.3], '0.01'), ([0.3, 0.2, 0.1], '1')])
def test_interior_min_disagrees_at_an_end(values, lowest):
  verdict, line = _one(DIP, _means(values))
  assert verdict == DISAGREE_1 and line.startswith(f'`c`: **disagrees**: m is lowest at beta={lowest} (')


def test_interior_min_cannot_tell_from_two_points():
  assert _one(DIP, _means([0.3, None, 0.2])) == (
      CANNOT_TELL_1, '`c`: **cannot tell**: m: fewer than three values of beta finished')


def test_interior_min_tie_with_the_first_end_disagrees():
  # The lowest error is (also) at the smallest beta: no dip.
  assert _one(DIP, _means([0.1, 0.1, 0.3]))[0] == DISAGREE_1
  assert _one(DIP, _means([0.2, 0.2, 0.2]))[0] == DISAGREE_1


def test_interior_min_tie_with_the_last_end_disagrees():
  # Mirror of [0.1, 0.1, 0.3]: the error does not rise again after its lowest value, so there is no interior minimum.
  assert _one(DIP, _means([0.3, 0.1, 0.1]))[0] == DISAGREE_1


# --- above --------------------------------------------------------------------------------------------------------

ABOVE = dict(check='above', metric='m', reference='chance', along='beta')


def _above(values, chance=(0.25, 0.25, 0.25), spec=ABOVE):
  return _one(spec, _merge(_means(values), _means(chance, metric='chance')))


def test_above_agrees_when_above_the_reference_everywhere():
  assert _above([0.5, 0.625, 0.75]) == (
      AGREE_1, '`c`: **agrees**: m above chance at 3/3 (beta=0.01: 0.5 vs 0.25; beta=0.1: 0.625 vs 0.25; '
               'beta=1: 0.75 vs 0.25)')


def test_above_disagrees_when_below_anywhere():
  assert _above([0.5, 0.125, 0.75]) == (
      DISAGREE_1, '`c`: **disagrees**: m above chance at 2/3 (beta=0.01: 0.5 vs 0.25; beta=0.1: 0.125 vs 0.25; '
                  'beta=1: 0.75 vs 0.25)')


def test_above_ties_disagree():
  # "more than chance": at chance is not above it.
  verdict, line = _above([0.5, 0.25, 0.75])
  assert verdict == DISAGREE_1 and 'above chance at 2/3 ' in line


def test_above_tolerance_is_a_margin():
  spec = {**ABOVE, 'tolerance': 0.25}
  assert _above([0.5, 0.625, 0.75], spec=spec)[0] == DISAGREE_1  # 0.5 is not > 0.25 + 0.25
  assert _above([0.625, 0.625, 0.75], spec=spec)[0] == AGREE_1


def test_above_cannot_tell_without_the_reference():
  assert _one(ABOVE, _means([0.5, 0.625, 0.75])) == (
      CANNOT_TELL_1, '`c`: **cannot tell**: m: no finished points with chance')


def test_above_with_one_point_decides_on_it():
  assert _one(ABOVE, _merge(_means([0.5], betas=(0.5,)), _means([0.25], metric='chance', betas=(0.5,))),
              betas=(0.5,)) == (AGREE_1, '`c`: **agrees**: m above chance at 1/1 (beta=0.5: 0.5 vs 0.25)')


def test_above_factor_scales_the_reference():
  # "test error more than twice the training error": 0.5 > 2 × 0.25 is a tie, so it disagrees; 0.625 agrees.
  spec = {**ABOVE, 'factor': 2.0}
  assert _above([0.625, 0.75, 0.875], spec=spec) == (
      AGREE_1, '`c`: **agrees**: m above 2 × chance at 3/3 (beta=0.01: 0.625 vs 2 × 0.25; '
               'beta=0.1: 0.75 vs 2 × 0.25; '
               'beta=1: 0.875 vs 2 × 0.25)')
  assert _above([0.5, 0.75, 0.875], spec=spec)[0] == DISAGREE_1


def test_where_pinning_x_needs_only_that_value():
  # The overfitting check of Fig 3a looks at the largest width only; the other widths need not have finished.
  spec = {**ABOVE, 'factor': 2.0, 'where': 'beta=1'}
  means = _merge(_means([None, None, 0.875]), _means([None, None, 0.25], metric='chance'))
  assert _one(spec, means) == (AGREE_1, '`c`: **agrees**: m above 2 × chance at 1/1 (beta=1: 0.875 vs 2 × 0.25)')
  means = _merge(_means([0.875, 0.875, None]), _means([0.25, 0.25, None], metric='chance'))
  assert _one(spec, means)[0] == CANNOT_TELL_1  # the pinned value did not finish; the others do not count


def test_unknown_check_kind_is_an_error():
  with pytest.raises(sweep.SweepError, match="unknown check 'rising'"):
    _one(dict(check='rising', metric='m'), _means([0.1, 0.2, 0.3]))


# --- several metrics (`metric='prefix:*'`) and `mode` ---------------------------------------------------------------

UP = [0.1, 0.2, 0.3]
DOWN = [0.3, 0.2, 0.1]
WILD = dict(check='increasing', metric='layer:*', along='beta')


@pytest.mark.parametrize('mode,a,b,word', [
    ('all', UP, UP, 'agrees'), ('all', UP, DOWN, 'disagrees'), ('all', DOWN, DOWN, 'disagrees'),
    ('any', UP, DOWN, 'agrees'), ('any', DOWN, UP, 'agrees'), ('any', DOWN, DOWN, 'disagrees'),
])
def test_mode_all_needs_every_metric_and_any_needs_one(mode, a, b, word):
  means = _merge(_means(a, metric='layer:a'), _means(b, metric='layer:b'))
  _, line = _one({**WILD, 'mode': mode, 'description': 'd'}, means)
  fmt = lambda v: ', '.join(f'{x}: {y:g}' for x, y in zip(('0.01', '0.1', '1'), v))
  assert line == (f'`c` (d): **{word}**: layer:a at beta=0.01: {a[0]:g}, at beta=1: {a[-1]:g} (all: {fmt(a)}) | '
                  f'layer:b at beta=0.01: {b[0]:g}, at beta=1: {b[-1]:g} (all: {fmt(b)})')


def test_mode_defaults_to_all():
  means = _merge(_means(UP, metric='layer:a'), _means(DOWN, metric='layer:b'))
  assert _one(WILD, means)[0] == DISAGREE_1


def test_a_wildcard_matching_no_column_cannot_tell():
  assert _one(dict(check='increasing', metric='zz:*'), _means(UP)) == (
      CANNOT_TELL_1, '`c`: **cannot tell**: no column matches zz:*')


@pytest.mark.parametrize('mode,decided', [('all', UP), ('any', DOWN)])
def test_mode_with_an_undecidable_metric_cannot_tell(mode, decided):
  # layer:b has one finished value: whether it rises is unknown, so neither "every layer" nor "no layer" is known.
  means = _merge(_means(decided, metric='layer:a'), _means([0.1, None, None], metric='layer:b'))
  assert _one({**WILD, 'mode': mode}, means)[0] == CANNOT_TELL_1


# --- the aggregate verdict ----------------------------------------------------------------------------------------

PASS = dict(check='increasing', metric='m')
FAIL = dict(check='decreasing', metric='m')
UNKNOWN = dict(check='increasing', metric='missing')


@pytest.mark.parametrize('checks,verdict', [
    ((PASS, PASS), 'agree (2 of 2 checks agree, 0 disagree, 0 cannot tell)'),
    ((PASS, FAIL), 'partly (1 of 2 checks agree, 1 disagree, 0 cannot tell)'),
    ((PASS, PASS, FAIL), 'partly (2 of 3 checks agree, 1 disagree, 0 cannot tell)'),
    ((FAIL, FAIL), 'disagree (0 of 2 checks agree, 2 disagree, 0 cannot tell)'),
    ((PASS, UNKNOWN), 'partly (1 of 2 checks agree, 0 disagree, 1 cannot tell)'),
    ((PASS, FAIL, UNKNOWN), 'partly (1 of 3 checks agree, 1 disagree, 1 cannot tell)'),
    ((UNKNOWN, UNKNOWN), 'cannot tell (0 of 2 checks agree, 0 disagree, 2 cannot tell)'),
])
def test_verdicts_aggregate_word_and_counts(checks, verdict):
  config = _config({f'c{i}': spec for i, spec in enumerate(checks)})
  got, lines = sweep.verdicts(config, _means(UP))
  assert got == verdict
  assert [line.split('**')[1] for line in lines] == [
      {id(PASS): 'agrees', id(FAIL): 'disagrees', id(UNKNOWN): 'cannot tell'}[id(s)] for s in checks]


def test_verdicts_no_check_agreeing_is_not_partly():
  got, _ = sweep.verdicts(_config({'a': FAIL, 'b': UNKNOWN}), _means(UP))
  assert got == 'disagree (0 of 2 checks agree, 1 disagree, 1 cannot tell)'


def test_verdicts_without_checks_and_line_order():
  assert sweep.verdicts(_config(), _means(UP)) == ('no check declared', [])
  _, lines = sweep.verdicts(_config({'zeta': FAIL, 'alpha': {**PASS, 'description': 'rises'}}), _means(UP))
  assert lines == ['`alpha` (rises): **agrees**: m at beta=0.01: 0.1, at beta=1: 0.3 (all: 0.01: 0.1, 0.1: 0.2, 1: 0.3)',
                   '`zeta`: **disagrees**: m at beta=0.01: 0.1, at beta=1: 0.3 (all: 0.01: 0.1, 0.1: 0.2, 1: 0.3)']


# --- missing data: seeds, failed points, NaN ----------------------------------------------------------------------


def _raw(config, values):
  """results.csv rows as `point_row` gives them: values[(beta label, seed)] = (status, m)."""
  rows = []
  for p in sweep.points(config):
    status, m = values[(p.labels['beta'], int(p.labels['seed']))]
    rows.append({**p.labels, 'point': p.name, 'status': status, 'm': m, 'steps': 10})
  return rows


def test_means_are_over_finished_seeds_and_the_check_uses_them():
  config = _config({'c': INC}, seeds=(0, 1))
  rows = _raw(config, {
      ('0.01', 0): ('done', 0.1), ('0.01', 1): ('done', 0.3),
      ('0.1', 0): ('done', 0.4), ('0.1', 1): ('failed', 0.0),  # a failed run's number must not count
      ('1', 0): ('done', math.nan), ('1', 1): ('done', 0.6),  # a NaN is no number: the mean is of the others
  })
  # NB beta=1 reads "2 of 2 seeds done" while its mean is of one seed (the NaN one is dropped): see the report.
  means = {r['beta']: r for r in sweep.mean_rows(config, rows)}
  assert [(r['seeds'], r['seeds_done']) for r in means.values()] == [(2, 2), (2, 1), (2, 2)]
  assert means['0.01']['m:mean'] == pytest.approx(0.2) and means['0.01']['m:std'] == pytest.approx(0.02 ** 0.5)
  assert means['0.1']['m:mean'] == 0.4 and means['0.1']['m:std'] is None  # the mean of 1 of 2 seeds
  assert means['1']['m:mean'] == 0.6 and means['1']['m:std'] is None
  assert 'steps:mean' not in means['0.01']
  verdict, lines = sweep.verdicts(config, list(means.values()))
  assert (verdict, lines) == (AGREE_1, ['`c`: **agrees**: m at beta=0.01: 0.2, at beta=1: 0.6 '
                                        '(all: 0.01: 0.2, 0.1: 0.4, 1: 0.6)'])


def test_a_setting_with_no_finished_seed_has_no_mean_and_is_not_a_point_of_the_check():
  config = _config({'c': INC}, seeds=(0, 1))
  rows = _raw(config, {
      ('0.01', 0): ('done', 0.1), ('0.01', 1): ('done', 0.1),
      ('0.1', 0): ('failed', 0.9), ('0.1', 1): ('incomplete', None),
      ('1', 0): ('done', math.nan), ('1', 1): ('done', math.nan),
  })
  means = sweep.mean_rows(config, rows)
  assert [(r['seeds_done'], 'm:mean' in r) for r in means] == [(2, True), (0, False), (2, False)]
  verdict, lines = sweep.verdicts(config, means)
  assert (verdict, lines) == (CANNOT_TELL_1, ['`c`: **cannot tell**: m: fewer than two values of beta finished'])


@pytest.mark.parametrize('case', ['increasing, largest beta failed', 'increasing, largest beta NaN',
                                  'le, one beta failed on one side', 'above, one beta failed',
                                  'interior_min, first beta failed'])
def test_missing_data_never_agrees(case):
  if case.startswith('increasing'):
    verdict, line = _one(INC, _means([0.1, 0.2, None if 'failed' in case else math.nan]))
  elif case.startswith('le'):
    verdict, line = _le([0.1, 0.2, 0.3], [0.2, None, 0.4])
  elif case.startswith('above'):
    verdict, line = _above([0.5, None, 0.75])
  else:
    verdict, line = _one(DIP, _merge(_means([None, 0.3, 0.1, 0.2], betas=(0.001, *BETAS))), betas=(0.001, *BETAS))
  assert verdict == CANNOT_TELL_1 and '**cannot tell**' in line


# --- report.md and CSV --------------------------------------------------------------------------------------------


def _printed(text):
  """(verdict, check lines) as report.md prints them."""
  lines = text.splitlines()
  prefix = '**Whether our numbers agree:** '
  (i,) = [k for k, line in enumerate(lines) if line.startswith(prefix)]
  assert lines[i].endswith('.') and lines[i + 1] == ''
  checks = []
  for line in lines[i + 2:]:
    if not line.startswith('- `'):
      break
    checks.append(line[2:])
  return lines[i][len(prefix):-1], checks


def test_report_md_prints_the_verdict_of_results_mean_csv(tmp_path):
  # Points written as a finished sweep leaves them (DONE, summary.json), one failed point with a number.
  config = _config({'rises': {**dict(check='increasing', metric='test_error_d'), 'description': 'error rises'},
                    'dips': dict(check='interior_min', metric='test_error_d')}, seeds=(0, 1))
  config.report.metrics = ()  # no figure: no plotting in this test
  errors = {('0.01', 0): 0.25, ('0.01', 1): 0.75, ('0.1', 0): 0.125, ('0.1', 1): 0.0625, ('1', 0): 0.875,
            ('1', 1): 0.5}
  for p in sweep.points(config):
    point_dir = tmp_path / p.name
    point_dir.mkdir()
    (point_dir / 'summary.json').write_text(json.dumps({'test/error_d': errors[(p.labels['beta'],
                                                                                int(p.labels['seed']))]}))
    if p.labels == {'beta': '0.1', 'seed': '1'}:
      (point_dir / sweep.STATUS_FILE).write_text(json.dumps({'status': 'failed'}))
    else:
      (point_dir / sweep.DONE_FILE).write_text(json.dumps(done_record(p, False)))
  sweep.write_report(config, str(tmp_path))
  expected = ('agree (2 of 2 checks agree, 0 disagree, 0 cannot tell)',
              ['`dips`: **agrees**: test_error_d is lowest at beta=0.1 (all: 0.01: 0.5, 0.1: 0.125, 1: 0.6875)',
               '`rises` (error rises): **agrees**: test_error_d at beta=0.01: 0.5, at beta=1: 0.6875 '
               '(all: 0.01: 0.5, 0.1: 0.125, 1: 0.6875)'])
  assert _printed((tmp_path / sweep.REPORT_FILE).read_text()) == expected
  # The same verdict from the CSV's text (as --mode=report or a reader gets it).
  assert sweep.verdicts(config, sweep.read_csv(tmp_path / sweep.MEANS_FILE)) == expected
  (failed,) = [r for r in sweep.read_csv(tmp_path / sweep.RESULTS_FILE) if r['status'] != 'done']
  assert failed['point'] == 'beta=0.1,seed=1' and failed['status'] == 'failed'


def _preset(name, variant):
  spec = importlib.util.spec_from_file_location(name, REPO_ROOT / 'configs' / 'sweeps' / f'{name}.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(variant)


COMMITTED = [
    ('fig2_cluttered', 'fig2_cluttered_cpu', 'partly (1 of 3 checks agree, 1 disagree, 1 cannot tell)',
     {'every_layer_more_focus': 'disagrees', 'localises_digit': 'agrees', 'more_beta_more_focus': 'cannot tell'}),
    ('fig3a_mnist', 'fig3a_mnist_cpu', 'partly (2 of 4 checks agree, 0 disagree, 2 cannot tell)',
     {'information_le_binary': 'agrees', 'information_le_lognormal_constant': 'cannot tell',
      'information_le_none': 'cannot tell', 'none_overfits_at_the_largest_width': 'agrees'}),
    ('ip_mnist', 'ip_mnist_cpu', 'agree (1 of 1 checks agree, 0 disagree, 0 cannot tell)',
     {'clear_of_the_ceiling': 'agrees'}),
    ('vae_mnist', 'vae_mnist_cpu', 'disagree (0 of 1 checks agree, 1 disagree, 0 cannot tell)',
     {'gaussian_near_the_iwae_anchor': 'disagrees'}),
    ('vae_mnist', 'vae_mnist_anchor', 'agree (1 of 1 checks agree, 0 disagree, 0 cannot tell)',
     {'gaussian_near_the_iwae_anchor': 'agrees'}),
    ('fig6_info', 'fig6_info_cpu', 'agree (2 of 2 checks agree, 0 disagree, 0 cannot tell)',
     {'per_unit_falls_with_filters': 'agrees', 'total_about_constant': 'agrees'}),
    ('fig3b_cifar', 'fig3b_cifar_cpu', 'disagree (0 of 1 checks agree, 1 disagree, 0 cannot tell)',
     {'information_le_binary': 'disagrees'}),
    ('fig5_tc', 'fig5_tc_cpu', 'partly (1 of 2 checks agree, 1 disagree, 0 cannot tell)',
     {'error_dips': 'disagrees', 'tc_decreases': 'agrees'}),
    ('fig4_occluded', 'fig4_occluded_cpu', 'partly (1 of 2 checks agree, 1 disagree, 0 cannot tell)',
     {'main_error_falls': 'disagrees', 'nuisance_error_rises': 'agrees'}),
]


@pytest.mark.parametrize('preset,report,verdict,words', COMMITTED)
def test_committed_report_verdicts_follow_from_their_results_mean_csv(preset, report, verdict, words):
  config = _preset(preset, report.rsplit('_', 1)[1])
  text = (REPORTS / report / sweep.REPORT_FILE).read_text(encoding='utf-8')
  assert text.startswith(f'# {config.name}\n')  # the report of this very preset
  computed = sweep.verdicts(config, sweep.read_csv(REPORTS / report / sweep.MEANS_FILE))
  assert computed == _printed(text)
  assert computed[0] == verdict
  assert {line.split('`')[1]: line.split('**')[1] for line in computed[1]} == words


def _assert_whole_images(row, column, images):
  # An error rate over `images` examples is a whole number of them over `images`.
  assert float(row[column]) * images == pytest.approx(round(float(row[column]) * images), abs=1e-6), column


def test_committed_fig3a_numbers():
  # Known answers of the committed fig3a: information dropout below binary at every width by more than the seeds'
  # spread; the overfitting check reads the no-noise net at w = 512, which fits every training image.
  _, lines = sweep.verdicts(_preset('fig3a_mnist', 'cpu'),
                            sweep.read_csv(REPORTS / 'fig3a_mnist_cpu' / sweep.MEANS_FILE))
  assert lines[0].endswith('**agrees**: test_error_d of information ≤ binary at 4/4 (width=64: 0.032 vs 0.181; '
                           'width=128: 0.01993 vs 0.04137; width=256: 0.01607 vs 0.02263; '
                           'width=512: 0.0141 vs 0.01563); '
                           "every difference is larger than the seeds' spread")
  assert lines[3].endswith('(width=512: 0.01507 vs 2 × 0)')
  rows = sweep.read_csv(REPORTS / 'fig3a_mnist_cpu' / sweep.RESULTS_FILE)
  assert len(rows) == 60 and {r['status'] for r in rows} == {'done'}
  for row in rows:
    # Known answers from the data: 60 000 training and 10 000 test images, so every error is a whole number of
    # images over them; and with no noise, D and N are the same network.
    _assert_whole_images(row, 'train_error_d', 60000)
    _assert_whole_images(row, 'test_error_d', 10000)
    if row['dropout'] == 'none':
      assert row['test_error_n'] == row['test_error_d'] and row['train_error_n'] == row['train_error_d']


def _assert_divided_by_the_layer_sizes(row, channels1, channels2):
  """Per-unit and per-dimension numbers of an All-CNN-32 row are its totals over the noisy layers' sizes: `channels1`
  at 16×16 after block 1's pooling, `channels2` at 8×8 after block 2's (TC is of the last noisy layer)."""
  for layer, units in (('block1_pool/noise', 16 * 16 * channels1), ('block2_pool/noise', 8 * 8 * channels2)):
    assert float(row[f'info_layer:{layer}']) / float(row[f'info_unit:{layer}']) == pytest.approx(units, rel=1e-9)
  assert float(row['tc_nats']) / float(row['tc_per_dim_nats']) == pytest.approx(8 * 8 * channels2, rel=1e-9)


def test_committed_fig5_per_dimension_numbers_divide_by_the_layer_sizes():
  # Known answer from the architecture: All-CNN-32 at 25 % filters has 24 and 48 channels.
  rows = sweep.read_csv(REPORTS / 'fig5_tc_cpu' / sweep.RESULTS_FILE)
  assert len(rows) == 6 and {r['status'] for r in rows} == {'done'}
  for row in rows:
    _assert_divided_by_the_layer_sizes(row, 24, 48)
    # The analysis' KL is the trainer's test KL recomputed, so the two agree to the noise of one pass.
    assert float(row['info_layer:block1_pool/noise']) == pytest.approx(float(row['kl:block1_pool/noise']), rel=0.01)


def test_committed_fig6_per_unit_numbers_divide_by_the_layer_sizes():
  # Known answer from the architecture: the original's int(96 f) and int(192 f) channels, (9, 19), (19, 38) and
  # (28, 57) at 10, 20 and 30 % of the filters.
  channels = {'0.1': (9, 19), '0.2': (19, 38), '0.3': (28, 57)}
  rows = sweep.read_csv(REPORTS / 'fig6_info_cpu' / sweep.RESULTS_FILE)
  assert sorted((r['filters'], r['seed']) for r in rows) == [(f, s) for f in channels for s in '01']
  for row in rows:
    _assert_divided_by_the_layer_sizes(row, *channels[row['filters']])


def test_committed_fig4_chance_and_layer_sizes_are_the_known_ones():
  # Known answers from the data and the architecture. Each of the 10 000 test images is occluded by a different MNIST
  # test digit (drawn without replacement), so the nuisance labels are MNIST's test labels, whose largest class is
  # the digit 1 with 1 135 images: always guessing it errs on 88.65 %. The net is All-CNN-32 at 25 % filters.
  rows = sweep.read_csv(REPORTS / 'fig4_occluded_cpu' / sweep.RESULTS_FILE)
  assert sorted((r['beta'], r['seed']) for r in rows) == [(b, s) for b in ('0.1', '1', '10') for s in '01']
  for row in rows:
    assert row['status'] == 'done' and float(row['nuisance_chance']) == pytest.approx(1 - 1135 / 10000, abs=1e-12)
    assert float(row['nuisance_error']) <= float(row['nuisance_chance']) + 0.01  # a probe does not lose to a guess
    _assert_divided_by_the_layer_sizes(row, 24, 48)
    assert float(row['info_layer:block2_pool/noise']) == pytest.approx(float(row['kl:block2_pool/noise']), rel=0.01)


def test_the_same_run_in_two_committed_sweeps_gives_the_same_numbers():
  # Known answer: fig3b's information dropout at 10 % filters is fig6's 10 % point (cifar_softplus, β 3, the same
  # overrides and seeds), run by another sweep (two at a time, one core each, against one at a time on two cores).
  fig3b = {r['seed']: r for r in sweep.read_csv(REPORTS / 'fig3b_cifar_cpu' / sweep.RESULTS_FILE)
           if (r['dropout'], r['filters']) == ('information', '0.1')}
  fig6 = {r['seed']: r for r in sweep.read_csv(REPORTS / 'fig6_info_cpu' / sweep.RESULTS_FILE) if r['filters'] == '0.1'}
  assert sorted(fig3b) == sorted(fig6) == ['0', '1']
  for seed, row in fig3b.items():
    for column in ('test_error_d', 'test_error_n'):
      assert row[column] == fig6[seed][column], (seed, column)
    # One core against two sums in another order: the same to float rounding (1e-7 relative seen).
    for column in ('test_ce_d', 'test_ce_n', 'kl:block1_pool/noise', 'kl:block2_pool/noise'):
      assert float(row[column]) == pytest.approx(float(fig6[seed][column]), rel=1e-5), (seed, column)
  # train_error's identity: the gap is test minus training error, noise off.
  for row in sweep.read_csv(REPORTS / 'fig3b_cifar_cpu' / sweep.RESULTS_FILE):
    assert float(row['generalization_gap_d']) == pytest.approx(
        float(row['test_error_d']) - float(row['train_error_d']), abs=1e-12)


@pytest.mark.parametrize('preset,report', [c[:2] for c in COMMITTED])
def test_committed_results_mean_is_the_mean_of_results_csv(preset, report):
  config = _preset(preset, report.rsplit('_', 1)[1])
  rows = sweep.read_csv(REPORTS / report / sweep.RESULTS_FILE)
  committed = sweep.read_csv(REPORTS / report / sweep.MEANS_FILE)
  recomputed = sweep.mean_rows(config, rows)
  settings = {r['point'].rsplit(',seed=', 1)[0] for r in rows}
  assert len(recomputed) == len(committed) == len(settings)
  for mine, theirs in zip(recomputed, committed):
    for column, cell in theirs.items():
      value = mine.get(column)
      if cell == '':
        assert value is None, column
      elif column.endswith((':mean', ':std')):
        assert value == pytest.approx(float(cell), rel=1e-12, abs=1e-15), column
      else:
        assert str(value) == cell, column


def test_committed_fig2_numbers():
  # Known answers of the committed fig2 from the data's construction, not from the runs: each MNIST digit (28×28) is
  # placed whole on a 48×48 canvas, so the digit box covers 28² / 48² of the image (the localisation's chance) in
  # every run; errors are whole numbers of the 14 000 training and 10 000 test images; 3 seeds at each β.
  rows = sweep.read_csv(REPORTS / 'fig2_cluttered_cpu' / sweep.RESULTS_FILE)
  assert sorted((r['beta'], r['seed']) for r in rows) == [(b, s) for b in ('0.05', '0.5') for s in '012']
  assert {r['status'] for r in rows} == {'done'}
  for row in rows:
    assert float(row['localization_chance']) == pytest.approx(28 ** 2 / 48 ** 2, rel=1e-12)
    _assert_whole_images(row, 'test_error_d', 10000)
    _assert_whole_images(row, 'train_error_d', 14000)
    boxes = [float(v) for k, v in row.items() if k.startswith('mass_in_box:')]
    assert len(boxes) == 4 and all(0.0 <= v <= 1.0 for v in boxes)
  # The report's mean ± std per layer is the mean and sample std of these rows.
  means = {r['beta']: r for r in sweep.read_csv(REPORTS / 'fig2_cluttered_cpu' / sweep.MEANS_FILE)}
  for beta in ('0.05', '0.5'):
    values = [float(r['mass_in_box:block1_pool/noise']) for r in rows if r['beta'] == beta]
    mean = sum(values) / 3
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / 2)
    assert float(means[beta]['mass_in_box:block1_pool/noise:mean']) == pytest.approx(mean, rel=1e-9)
    assert float(means[beta]['mass_in_box:block1_pool/noise:std']) == pytest.approx(std, rel=1e-9)
