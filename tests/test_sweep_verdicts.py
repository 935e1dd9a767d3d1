"""Known answers for the sweep verdicts (`infodrop_jax.sweep.checks`): each check kind on per-seed rows whose verdict
is known (clear, the wrong way, within the noise, one seed, unfinished runs), preconditions and their gating, the
validation of a config's checks, the aggregate word, report.md, and every committed report rebuilt from its
committed results.csv and sweep.json (the verdicts the reports print are recomputed here). The rules as rules (null
and power simulations) are tested in tests/test_sweep_checks.py.

Pure Python and no training: the whole file runs in seconds.
"""
import importlib.util
import json
import math
import pathlib
import shutil

import numpy as np
import pytest

from infodrop_jax import sweep
from infodrop_jax.sweep import checks
from infodrop_jax.sweep import report as sweep_report
from infodrop_jax.sweep.commands import done_record

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
REPORTS = REPO_ROOT / 'reports'
BETAS = (0.01, 0.1, 1.0)  # labels '0.01', '0.1', '1'
SEEDS = (0, 1, 2)

AGREE_1 = 'agree (1 of 1 checks agree, 0 disagree, 0 cannot tell)'
DISAGREE_1 = 'disagree (0 of 1 checks agree, 1 disagree, 0 cannot tell)'
CANNOT_TELL_1 = 'cannot tell (0 of 1 checks agree, 0 disagree, 1 cannot tell)'


def _config(claims=None, preconditions=None, *, betas=BETAS, dropouts=(), seeds=SEEDS):
  """A sweep over beta (and dropout when given), report.x = beta."""
  config = sweep.new_config('t', 'configs/mnist_fc.py')
  if dropouts:
    config.axes.dropout = sweep.axis('model.dropout', dropouts)
  config.axes.beta = sweep.axis('loss.beta', betas)
  config.seeds = seeds
  config.analyze = False
  config.report.x = 'beta'
  for name, spec in (claims or {}).items():
    config.expect[name] = spec
  for name, spec in (preconditions or {}).items():
    config.preconditions[name] = spec
  return config


def _rows(config, value, status=lambda labels: 'done'):
  """results.csv rows of every point of `config`: value(labels) is {column: number} (or one number for 'm')."""
  rows = []
  for p in sweep.points(config):
    v = value(p.labels)
    rows.append({**p.labels, 'point': p.name, 'status': status(p.labels), **(v if isinstance(v, dict) else {'m': v})})
  return rows


def _noise(labels, scale=0.01):
  """A fixed small offset per seed, mean 0 over seeds 0, 1, 2 (sample std = scale)."""
  return (-scale, 0.0, scale)[int(labels['seed'])]


def _one(spec, value, **kwargs):
  """(overall verdict, the check's line) of a sweep whose only claim is `c`."""
  config = _config({'c': spec}, **{k: v for k, v in kwargs.items() if k != 'status'})
  verdict, lines = sweep.verdicts(config, _rows(config, value, **({'status': kwargs['status']}
                                                                  if 'status' in kwargs else {})))
  assert len(lines) == 1
  return verdict, lines[0]


def test_this_checkout_is_the_package_under_test():
  # A mutation run in a copy of the tree must test the copy's code, not an installed one.
  assert pathlib.Path(sweep_report.__file__).resolve().is_relative_to(REPO_ROOT)
  assert sweep.CHECKS == ('le', 'increasing', 'decreasing', 'range_le', 'interior_min', 'above', 'at_least',
                          'at_most', 'within', 'window_fall', 'stable_in_sample')
  assert len(checks.docs()) == len(sweep.CHECKS)


# --- le ---------------------------------------------------------------------------------------------------------

LE = dict(check='le', metric='m', by='dropout', a='information', b='binary', along='beta')
METHODS = ('information', 'binary')


def _le(info, binary, spec=LE, scale=0.01, **kwargs):
  """info[i] / binary[i]: the mean at BETAS[i]; seeds spread by ± scale."""
  means = {'information': info, 'binary': binary}
  return _one(spec, lambda l: means[l['dropout']][BETAS.index(float(l['beta']))] + _noise(l, scale),
              dropouts=METHODS, **kwargs)


def test_le_agrees_when_a_is_clearly_below_b_everywhere():
  verdict, line = _le([0.1, 0.1, 0.1], [0.3, 0.3, 0.3])
  assert verdict == AGREE_1
  # Welch with equal spreads 0.01, 3 seeds: se = 0.01·sqrt(2/3), df = 4; 3 comparisons at 1 − 0.05/3.
  assert 'beta=0.01: -0.2 [' in line and 'Welch t, df 4, n = 3 vs 3' in line
  assert '95 % intervals simultaneous over 3 comparisons (each at 98.3 %)' in line


def test_le_disagrees_on_one_clear_counterexample():
  verdict, line = _le([0.1, 0.1, 0.5], [0.3, 0.3, 0.3])
  assert verdict == DISAGREE_1 and 'beta=1: 0.2 [' in line


def test_le_within_the_noise_cannot_tell_and_says_what_would_decide():
  # A difference of one seed std, 3 seeds: the interval contains 0.
  verdict, line = _le([0.1, 0.1, 0.1], [0.11, 0.3, 0.3])
  assert verdict == CANNOT_TELL_1
  assert 'What would decide, if the effect stays at its estimate: beta=0.01: about ' in line


def test_what_would_decide_is_the_fewest_seeds_whose_interval_clears_the_boundary():
  from infodrop_jax.sweep import inference  # pylint: disable=g-import-not-at-top
  leaf = checks.Leaf('x', effect=-0.01, se=0.01 * math.sqrt(2 / 3), df=4.0, lo=-math.inf, hi=0.0, test='Welch t',
                     n=3)
  needed = int(leaf.to_decide(family=3).split('about ')[1].split()[0])
  half = lambda n: float(inference.half_width(leaf.se * math.sqrt(3 / n), 2.0 * (n - 1), 3))
  assert half(needed) < 0.01 <= half(needed - 1)
  assert 'no number of seeds' in checks.Leaf('x', 0.0, 0.1, 4.0, -math.inf, 0.0, 'Welch t', n=3).to_decide(1)
  measured = checks.Leaf('x', effect=91.0, se=0.5, df=math.inf, lo=84.78, hi=91.76, test='z')
  assert measured.to_decide(1) == f'x: a Monte Carlo error {1.959964 * 0.5 / 0.76:.2g}× smaller'


def test_le_tolerance_moves_the_boundary():
  assert _le([0.1] * 3, [0.05] * 3, spec={**LE, 'tolerance': 0.1})[0] == AGREE_1
  assert _le([0.1] * 3, [0.05] * 3)[0] == DISAGREE_1


def test_le_with_one_seed_cannot_tell_however_large_the_difference():
  verdict, line = _le([0.1] * 3, [0.9] * 3, scale=0.0, seeds=(0,))
  assert verdict == CANNOT_TELL_1 and 'no standard error' in line


def test_le_identical_seeds_are_known_exactly():
  # Every seed the same on both sides (values whose mean is exact in binary): the difference is exact (se 0).
  assert _le([0.25] * 3, [0.5] * 3, scale=0.0)[0] == AGREE_1
  assert _le([0.5] * 3, [0.5] * 3, scale=0.0)[0] == DISAGREE_1  # a tie is not "<"


def test_an_unfinished_run_may_disagree_but_not_agree():
  unfinished = lambda l: 'failed' if (l['dropout'], l['beta'], l['seed']) == ('binary', '1', '2') else 'done'
  verdict, line = _le([0.1] * 3, [0.3] * 3, status=unfinished)
  assert verdict == CANNOT_TELL_1 and 'a run not finished' in line
  assert _le([0.1, 0.1, 0.9], [0.3] * 3, status=unfinished)[0] == DISAGREE_1


# --- increasing / decreasing / interior_min ---------------------------------------------------------------------

INC = dict(check='increasing', metric='m', along='beta')
DEC = dict(check='decreasing', metric='m', along='beta')
DIP = dict(check='interior_min', metric='m', along='beta')


def _series(values, spec, scale=0.01, betas=BETAS):
  return _one(spec, lambda l: values[[sweep.label_of(b) for b in betas].index(l['beta'])] + _noise(l, scale),
              betas=betas)


@pytest.mark.parametrize('spec,values,verdict', [
    (INC, [0.1, 0.9, 0.3], AGREE_1),  # the endpoints decide
    (INC, [0.3, 0.2, 0.1], DISAGREE_1),
    (INC, [0.1, 0.2, 0.11], CANNOT_TELL_1),
    (DEC, [0.3, 0.2, 0.1], AGREE_1),
    (DEC, [0.1, 0.2, 0.3], DISAGREE_1),
    ({**INC, 'tolerance': 0.5}, [0.1, 0.2, 0.3], DISAGREE_1),
    (DIP, [0.3, 0.1, 0.3], AGREE_1),
    (DIP, [0.1, 0.2, 0.3], DISAGREE_1),
    (DIP, [0.3, 0.295, 0.3], CANNOT_TELL_1),
])
def test_ordering_kinds_known_answers(spec, values, verdict):
  assert _series(values, spec)[0] == verdict


def test_interior_min_and_increasing_need_enough_values_of_x():
  assert _series([0.3, 0.1], DIP, betas=(0.1, 1.0))[0] == CANNOT_TELL_1
  assert _series([0.1], INC, betas=(0.1,))[0] == CANNOT_TELL_1


def test_where_selects_a_series_and_along_defaults_to_report_x():
  spec = dict(check='increasing', metric='m', where='dropout=binary')
  means = {'information': [0.3, 0.2, 0.1], 'binary': [0.1, 0.2, 0.3]}
  verdict, line = _one(spec, lambda l: means[l['dropout']][BETAS.index(float(l['beta']))] + _noise(l),
                       dropouts=METHODS)
  assert verdict == AGREE_1 and 'beta=1 − beta=0.01: 0.2' in line


# --- range_le, above ---------------------------------------------------------------------------------------------

RANGE = dict(check='range_le', metric='m', along='beta', margin=0.1, margin_reason='the paper\'s reading')


def test_range_le_is_an_equivalence_test():
  assert _series([1.0, 1.01, 1.0], RANGE)[0] == AGREE_1
  assert _series([1.0, 1.5, 1.0], RANGE)[0] == DISAGREE_1
  # Not different, yet not shown close: the seeds' noise is as large as the margin.
  assert _series([1.0, 1.0, 1.0], RANGE, scale=0.1)[0] == CANNOT_TELL_1
  relative = {**{k: v for k, v in RANGE.items() if k != 'margin'}, 'relative_margin': 0.1}
  assert _series([1.0, 1.01, 1.0], relative)[0] == AGREE_1  # ± 0.1 of a mean of 1.003
  assert _series([1.0, 1.5, 1.0], relative)[0] == DISAGREE_1


def test_range_le_needs_exactly_one_margin_and_its_reason():
  for bad in ({k: v for k, v in RANGE.items() if k != 'margin'}, {**RANGE, 'relative_margin': 0.5},
              {k: v for k, v in RANGE.items() if k != 'margin_reason'}):
    with pytest.raises(sweep.SweepError, match='range_le|margin_reason'):
      checks.validate(_config({'c': bad}))


ABOVE = dict(check='above', metric='m', reference='chance', along='beta')


@pytest.mark.parametrize('values,verdict', [([0.5, 0.5, 0.5], AGREE_1), ([0.5, 0.2, 0.5], DISAGREE_1),
                                            ([0.5, 0.255, 0.5], CANNOT_TELL_1)])
def test_above_is_a_paired_difference_per_run(values, verdict):
  got, line = _one(ABOVE, lambda l: {'m': values[BETAS.index(float(l['beta']))] + _noise(l), 'chance': 0.25})
  assert got == verdict and 'paired t, df 2, n = 3' in line


def test_above_without_its_reference_column_is_not_measured():
  verdict, line = _one(ABOVE, lambda l: 0.5 + _noise(l))
  assert verdict == CANNOT_TELL_1 and '**not measured**' in line


# --- bounds with their Monte Carlo error --------------------------------------------------------------------------

def _bound(spec, values, stderr=0.5):
  return _one(spec, lambda l: {'iw': values[int(l['seed'])], 'iw_se': stderr}, betas=(1.0,))


AT_MOST = dict(check='at_most', metric='iw', value=90.0, stderr='iw_se')
WITHIN = dict(check='within', metric='iw', stderr='iw_se', low=85.0, high=90.0, margin_reason='test')


def test_bounds_count_each_value_s_monte_carlo_error():
  assert _bound(AT_MOST, [88.0, 88.0, 88.0])[0] == AGREE_1
  # 89.5 ± 2.39 · 0.5 (3 runs at 1 − 0.05/3) contains 90: cannot tell, where "89.5 < 90" alone would agree.
  assert _bound(AT_MOST, [88.0, 89.5, 88.0])[0] == CANNOT_TELL_1
  assert _bound(AT_MOST, [88.0, 92.0, 88.0])[0] == DISAGREE_1
  # Without a stderr column the value counts as exact, and the line says so.
  verdict, line = _bound({k: v for k, v in AT_MOST.items() if k != 'stderr'}, [88.0, 89.9, 88.0])
  assert verdict == AGREE_1 and 'exact (no Monte Carlo error recorded)' in line


def test_within_is_two_sided():
  assert _bound(WITHIN, [87.0, 87.5, 88.0])[0] == AGREE_1
  # A bug that lowers the bound by 4.6 nats (a lost log k) fails it.
  assert _bound(WITHIN, [87.0 - 4.6] * 3)[0] == DISAGREE_1
  assert _bound(WITHIN, [85.5, 87.0, 87.0])[0] == CANNOT_TELL_1


def test_at_least_with_a_reference_column():
  spec = dict(check='at_most', metric='iw', reference='elbo', value=0.0, stderr='iw_se')
  verdict, line = _one(spec, lambda l: {'iw': 90.0, 'elbo': 94.0, 'iw_se': 0.5}, betas=(1.0,))
  assert verdict == AGREE_1 and ': -4 [' in line


# --- window_fall and stable_in_sample ----------------------------------------------------------------------------

def _plane_config(spec):
  config = _config({'c': spec}, betas=(1.0,))
  config.axes = {}
  config.axes.dropout = sweep.axis('model.dropout', METHODS)
  config.report.x = 'dropout'
  config.name = 'p'
  return config


def _write_plane(tmp_path, curves):
  """curves[method] = (seeds × epochs 0, 10, …, 100) I(X;Z) of the training examples."""
  epochs = np.arange(0, 101, 10, dtype=float)
  arrays = {}
  for method, ixz in curves.items():
    arrays[f'{method}/hidden3/epoch'] = epochs
    arrays[f'{method}/hidden3/ixz'] = np.asarray(ixz, float)
  np.savez(tmp_path / 'p_information_plane.npz', **arrays)


FALL = dict(check='window_fall', metric='hidden3', along='dropout', early=(10, 30), late=(80, 100), mode='any')


def test_window_fall_reads_the_fixed_windows_of_the_training_curves(tmp_path):
  falling = [[1.0] + [3.0 + d] * 3 + [2.5] * 4 + [2.0 + d] * 3 for d in (-0.05, 0.0, 0.05)]
  flat = [[1.0] + [3.0 + d] * 3 + [3.0] * 7 for d in (-0.1, 0.0, 0.1)]  # falls −0.1, 0, 0.1
  _write_plane(tmp_path, {'information': flat, 'binary': falling})
  config = _plane_config(FALL)
  rows = _rows(config, lambda l: 0.0)
  verdict, lines = sweep.verdicts(config, rows, str(tmp_path))
  assert verdict == AGREE_1 and 'dropout=binary: 1 [' in lines[0] and '3 seeds' in lines[0]
  config.expect.c = {**FALL, 'direction': 'rise'}
  assert sweep.verdicts(config, rows, str(tmp_path))[0] == CANNOT_TELL_1  # the flat one shows no rise either
  # 'all' needs both methods to fall; the flat one cannot tell.
  config.expect.c = {**FALL, 'mode': 'all'}
  assert sweep.verdicts(config, rows, str(tmp_path))[0] == CANNOT_TELL_1
  # No arrays: not measured.
  assert 'not measured' in sweep.verdicts(config, rows, str(tmp_path / 'elsewhere'))[1][0]


STABLE = dict(check='stable_in_sample', metric='ixz:*', doubled='ixz_2m:*', stderr='ixz_se:*',
              doubled_stderr='ixz_2m_se:*')


def test_stable_in_sample_agrees_when_doubling_moves_less_than_its_noise():
  move = {'ixz:h': 2.0, 'ixz_se:h': 0.05, 'ixz_2m_se:h': 0.05}
  assert _one(STABLE, lambda l: {**move, 'ixz_2m:h': 2.05}, betas=(1.0,))[0] == AGREE_1
  assert _one(STABLE, lambda l: {**move, 'ixz_2m:h': 2.5}, betas=(1.0,))[0] == DISAGREE_1
  verdict, line = _one(STABLE, lambda l: {'ixz:h': 2.0}, betas=(1.0,))
  assert verdict == CANNOT_TELL_1 and 'not measured' in line


# --- several metrics and mode -----------------------------------------------------------------------------------

WILD = dict(check='increasing', metric='layer:*', along='beta')


@pytest.mark.parametrize('mode,a,b,word', [
    ('all', 0.3, 0.3, 'agree'), ('all', 0.3, -0.3, 'disagree'), ('any', 0.3, -0.3, 'agree'),
    ('any', -0.3, -0.3, 'disagree'), ('all', 0.3, 0.011, 'cannot tell'), ('any', -0.3, 0.011, 'cannot tell')])
def test_mode_all_needs_every_metric_and_any_needs_one(mode, a, b, word):
  rises = {'layer:a': a, 'layer:b': b}
  value = lambda l: {k: 0.1 + r * BETAS.index(float(l['beta'])) / 2 + _noise(l) for k, r in rises.items()}
  verdict, line = _one({**WILD, 'mode': mode}, value)
  assert verdict.startswith(word + ' ('), (verdict, line)
  assert 'simultaneous over 2 comparisons' in line and f'{"every" if mode == "all" else "some"} metric of 2' in line


def test_a_wildcard_matching_no_column_is_not_measured():
  verdict, line = _one(WILD, lambda l: 0.1)
  assert verdict == CANNOT_TELL_1 and '**not measured**' in line


# --- preconditions ----------------------------------------------------------------------------------------------

OVERFITS = sweep.baseline_overfits('beta=0.01')


def _gated(train_error, claims=None, **pre):
  claims = claims or {'rises': INC}
  config = _config(claims, {'overfits': {**OVERFITS, **pre}})
  value = lambda l: {'m': 0.1 * BETAS.index(float(l['beta'])) + _noise(l), 'test_error_d': 0.05 + _noise(l, 0.001),
                     **({'train_error_d': train_error} if train_error is not None else {})}
  return sweep.verdicts(config, _rows(config, value))


def test_a_precondition_that_holds_lets_the_claim_decide():
  verdict, lines = _gated(0.0)
  assert verdict == AGREE_1
  assert lines[0].startswith('precondition `overfits`') and '**agrees**' in lines[0] and 'Why: ' in lines[0]


def test_a_failed_or_unmeasured_precondition_makes_its_claims_cannot_tell():
  verdict, lines = _gated(0.049)  # a gap of 0.1 points: the baseline does not overfit
  assert verdict == CANNOT_TELL_1 and '**disagrees**' in lines[0]
  assert '**cannot tell** (precondition `overfits` disagrees; the test alone: agrees)' in lines[1]
  verdict, lines = _gated(None)
  assert verdict == CANNOT_TELL_1 and '(precondition `overfits` not measured; the test alone: agrees)' in lines[1]
  # optional: not measured gates nothing (a measured failure still does).
  assert _gated(None, optional=True)[0] == AGREE_1
  assert _gated(0.049, optional=True)[0] == CANNOT_TELL_1


def test_gates_names_the_claims_a_precondition_gates():
  verdict, _ = _gated(0.049, claims={'rises': INC, 'falls': DEC}, gates=('falls',))
  assert verdict == 'partly (1 of 2 checks agree, 0 disagree, 1 cannot tell)'


# --- validation ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('claims,preconditions,match', [
    ({'c': dict(check='rises', metric='m')}, {}, "check='rises'"),
    ({'c': dict(check='le', metric='m', by='dropout', a='x')}, {}, r"needs \['b'\]"),
    ({'c': {**INC, 'within_spread_cannot_tell': True}}, {}, 'unknown field'),
    ({'c': {**INC, 'where': 'width=64'}}, {}, 'not axes of the sweep'),
    ({'c': {**INC, 'mode': 'some'}}, {}, 'mode='),
    ({'c': INC}, {'p': {k: v for k, v in OVERFITS.items() if k != 'why'}}, 'give `why`'),
    ({'c': INC}, {'p': {**OVERFITS, 'gates': ('nope',)}}, 'not claims in expect'),
    ({'c': {**FALL, 'early': (30, 10)}}, {}, 'first epoch, last epoch'),
    ({'c': {**INC, 'why': 'x'}}, {}, 'unknown field'),  # `why` belongs to preconditions
])
def test_a_check_no_kind_can_decide_is_an_error_naming_it(claims, preconditions, match):
  with pytest.raises(sweep.SweepError, match=match):
    checks.validate(_config(claims, preconditions))


def test_the_sweep_modes_validate_the_checks_before_anything_runs(tmp_path, capsys):
  config = _config({'c': dict(check='rises', metric='m')})
  assert sweep.main('sweep_commands', config, str(tmp_path)) == 2
  assert "expect c: check='rises'" in capsys.readouterr().err
  assert not any(tmp_path.iterdir())


def test_every_preset_validates():
  for path in sorted((REPO_ROOT / 'configs' / 'sweeps').glob('*.py')):
    if path.stem == 'cifar_common':
      continue
    for variant in ('', 'cpu', 'smoke') + (('anchor',) if path.stem == 'vae_mnist' else ()):
      checks.validate(_preset(path.stem, variant))


# --- the aggregate verdict ----------------------------------------------------------------------------------------

PASS, FAIL, UNKNOWN = INC, DEC, dict(check='increasing', metric='missing')


@pytest.mark.parametrize('claims,verdict', [
    ((PASS, PASS), 'agree (2 of 2 checks agree, 0 disagree, 0 cannot tell)'),
    ((PASS, FAIL), 'partly (1 of 2 checks agree, 1 disagree, 0 cannot tell)'),
    ((FAIL, FAIL), 'disagree (0 of 2 checks agree, 2 disagree, 0 cannot tell)'),
    ((PASS, UNKNOWN), 'partly (1 of 2 checks agree, 0 disagree, 1 cannot tell)'),
    ((FAIL, UNKNOWN), 'disagree (0 of 2 checks agree, 1 disagree, 1 cannot tell)'),
    ((UNKNOWN, UNKNOWN), 'cannot tell (0 of 2 checks agree, 0 disagree, 2 cannot tell)'),
])
def test_verdicts_aggregate_word_and_counts(claims, verdict):
  config = _config({f'c{i}': spec for i, spec in enumerate(claims)})
  got, lines = sweep.verdicts(config, _rows(config, lambda l: 0.1 * BETAS.index(float(l['beta'])) + _noise(l)))
  assert got == verdict and len(lines) == len(claims)
  assert sweep.verdicts(_config(), [])[0] == 'no check declared'


# --- report.md, from the points' directories and from a committed CSV ----------------------------------------------


def _printed(text):
  """(verdict, check lines) as report.md prints them."""
  lines = text.splitlines()
  prefix = '**Whether our numbers agree:** '
  (i,) = [k for k, line in enumerate(lines) if line.startswith(prefix)]
  assert lines[i].endswith('.') and lines[i + 1] == ''
  found = []
  for line in lines[i + 2:]:
    if not line.startswith('- '):
      break
    found.append(line[2:])
  return lines[i][len(prefix):-1], found


def test_report_md_prints_the_verdicts_of_its_rows_and_rebuilds_from_its_csv(tmp_path):
  config = _config({'rises': {**dict(check='increasing', metric='test_error_d'), 'description': 'error rises'}},
                   seeds=(0, 1, 2))
  config.report.metrics = ()  # no figure: no plotting in this test
  for p in sweep.points(config):
    point_dir = tmp_path / 'sweep' / p.name
    point_dir.mkdir(parents=True)
    error = 0.1 * (1 + BETAS.index(float(p.labels['beta']))) + 0.001 * int(p.labels['seed'])
    (point_dir / 'summary.json').write_text(json.dumps({'test/error_d': error, 'wall_time_s': 100.0}))
    if p.labels == {'beta': '0.1', 'seed': '1'}:
      (point_dir / sweep.STATUS_FILE).write_text(json.dumps({'status': 'failed'}))
    else:
      (point_dir / sweep.DONE_FILE).write_text(json.dumps(done_record(p, False)))
  workdir = tmp_path / 'sweep'
  sweep.write_report(config, str(workdir))
  printed = _printed((workdir / sweep.REPORT_FILE).read_text())
  assert printed[0] == AGREE_1 and printed[1][0].startswith('`rises` (error rises): **agrees**: claim test_error_d')
  assert printed == sweep.verdicts(config, sweep.read_csv(workdir / sweep.RESULTS_FILE))
  # A committed copy: results.csv and sweep.json only. The same verdict, the same report but its first lines.
  committed = tmp_path / 'committed'
  committed.mkdir()
  shutil.copy(workdir / sweep.RESULTS_FILE, committed / sweep.RESULTS_FILE)
  sweep.spec.save_sweep(config, str(committed), 'python launch.py ...')
  sweep.write_report(sweep.load_sweep(str(committed)), str(committed), draw=False)
  text = (committed / sweep.REPORT_FILE).read_text()
  assert _printed(text) == printed and 'rebuilt from the committed results.csv and sweep.json' in text
  assert (committed / sweep.MEANS_FILE).read_text() == (workdir / sweep.MEANS_FILE).read_text()


def test_a_committed_csv_of_another_sweep_is_refused(tmp_path):
  config = _config({'c': INC})
  rows = _rows(config, lambda l: 0.1)
  rows[0]['point'] = 'beta=7,seed=0'
  header = sorted({k for r in rows for k in r})
  with open(tmp_path / sweep.RESULTS_FILE, 'w') as f:
    f.write(','.join(header) + '\n' + '\n'.join(','.join(f'"{r.get(k, "")}"' for k in header) for r in rows) + '\n')
  with pytest.raises(sweep.SweepError, match='no points of the sweep config'):
    sweep.write_report(config, str(tmp_path), draw=False)


@pytest.mark.parametrize('wall,train,expected', [(300.0, 250.0, 300.0), (20.0, 250.0, 270.0), (None, 250.0, 250.0),
                                                 (30.0, None, 30.0)])
def test_a_point_s_wall_time_counts_its_training_when_it_was_analysed_again(wall, train, expected):
  # status.json's time covers training + analysis when run in one go; a re-analysis records only itself.
  assert sweep_report.point_wall_time({'wall_time_s': wall, 'train_wall_time_s': train}) == expected


def _preset(name, variant):
  spec = importlib.util.spec_from_file_location(name, REPO_ROOT / 'configs' / 'sweeps' / f'{name}.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(variant)


# The verdicts of the committed reports under these rules (their history: each report's "Verdicts changed" list).
COMMITTED = {
    'fig2_cluttered_cpu': ('fig2_cluttered', 'partly (1 of 3 checks agree, 1 disagree, 1 cannot tell)'),
    'fig3a_mnist_cpu': ('fig3a_mnist', 'cannot tell (0 of 3 checks agree, 0 disagree, 3 cannot tell)'),
    'fig3b_cifar_cpu': ('fig3b_cifar', 'cannot tell (0 of 1 checks agree, 0 disagree, 1 cannot tell)'),
    'fig4_occluded_cpu': ('fig4_occluded', 'disagree (0 of 2 checks agree, 1 disagree, 1 cannot tell)'),
    'fig5_tc_cpu': ('fig5_tc', 'cannot tell (0 of 2 checks agree, 0 disagree, 2 cannot tell)'),
    'fig6_info_cpu': ('fig6_info', 'cannot tell (0 of 2 checks agree, 0 disagree, 2 cannot tell)'),
    'ip_mnist_cpu': ('ip_mnist', 'cannot tell (0 of 2 checks agree, 0 disagree, 2 cannot tell)'),
    'vae_mnist_anchor': ('vae_mnist', 'agree (1 of 1 checks agree, 0 disagree, 0 cannot tell)'),
    'vae_mnist_cpu': ('vae_mnist', 'cannot tell (0 of 1 checks agree, 0 disagree, 1 cannot tell)'),
}


def test_every_committed_report_is_listed():
  assert sorted(p.name for p in REPORTS.iterdir() if p.is_dir()) == sorted(COMMITTED)


@pytest.mark.parametrize('report', sorted(COMMITTED))
def test_committed_report_rebuilds_from_its_csv(report, tmp_path, monkeypatch):
  # The report a reader gets from the committed results.csv and sweep.json is the committed report.md, line for
  # line but the "Generated" line (its date and directory), on any machine: the points' commands are the recorded
  # ones, not rebuilt from this machine's data path.
  monkeypatch.setenv('INFODROP_DATA_DIR', str(tmp_path / 'another_machine_s_data'))
  copy = tmp_path / report
  shutil.copytree(REPORTS / report, copy)
  config = sweep.load_sweep(str(copy))
  sweep.write_report(config, str(copy), draw=False)
  committed = (REPORTS / report / sweep.REPORT_FILE).read_text(encoding='utf-8').splitlines()
  rebuilt = (copy / sweep.REPORT_FILE).read_text(encoding='utf-8').splitlines()
  assert committed[2].startswith('Generated ') and rebuilt[2].startswith('Generated ')
  assert committed[:2] + committed[3:] == rebuilt[:2] + rebuilt[3:]
  assert (copy / sweep.MEANS_FILE).read_text() == (REPORTS / report / sweep.MEANS_FILE).read_text()
  assert _printed('\n'.join(committed))[0] == COMMITTED[report][1]


@pytest.mark.parametrize('report', sorted(COMMITTED))
def test_committed_sweep_json_holds_the_preset_that_ran(report):
  # The points and their commands from sweep.json are those of today's preset variant (the report's commands).
  name, _ = COMMITTED[report]
  saved = sweep.load_sweep(str(REPORTS / report))
  preset = _preset(name, report.rsplit('_', 1)[1])
  assert [p.name for p in sweep.points(saved)] == [p.name for p in sweep.points(preset)]
  assert saved.overrides == preset.overrides and saved.base == preset.base
  assert saved.expect.to_dict() == preset.expect.to_dict()
  assert saved.preconditions.to_dict() == preset.preconditions.to_dict()


def _assert_whole_images(row, column, images):
  # An error rate over `images` examples is a whole number of them over `images`.
  assert float(row[column]) * images == pytest.approx(round(float(row[column]) * images), abs=1e-6), column


def test_committed_fig3a_numbers():
  # Known answers of the committed fig3a, computed here from its rows with scipy: information against binary at
  # width 128 (Welch), and the no-noise w = 512 net's gap (it fits every training image: the gap is its test error).
  from scipy import stats  # pylint: disable=g-import-not-at-top
  rows = sweep.read_csv(REPORTS / 'fig3a_mnist_cpu' / sweep.RESULTS_FILE)
  errors = lambda d, w: [float(r['test_error_d']) for r in rows if (r['dropout'], r['width']) == (d, w)]
  info, binary = errors('information', '128'), errors('binary', '128')
  welch = stats.ttest_ind(info, binary, equal_var=False)
  se = (np.mean(info) - np.mean(binary)) / welch.statistic
  low = np.mean(info) - np.mean(binary) - stats.t.ppf(1 - 0.05 / 8, welch.df) * se
  _, lines = sweep.verdicts(_preset('fig3a_mnist', 'cpu'), rows)
  (line,) = [l for l in lines if l.startswith('`information_le_binary`')]
  assert f'width=128: {np.mean(info) - np.mean(binary):.4g} [{low:.4g}, ' in line
  assert f'Welch t, df {welch.df:.3g}, n = 3 vs 3' in line
  (pre,) = [l for l in lines if l.startswith('precondition `none_overfits`')]
  assert '**agrees**' in pre and f'width=512: {np.mean(errors("none", "512")):.4g} [' in pre
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


@pytest.mark.parametrize('report', sorted(COMMITTED))
def test_committed_results_mean_is_the_mean_of_results_csv(report):
  config = _preset(COMMITTED[report][0], report.rsplit('_', 1)[1])
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
