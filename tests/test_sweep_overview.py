"""The picture of where the paper stands (`infodrop_jax.sweep.overview`) and every number the README quotes from a
committed report: the README's table of claims is what the committed reports decide, reports/claims.md and
reports/claims.png are rebuilt from them, and the README's Fig. 2 numbers are their results_mean.csv's.

Pure Python and matplotlib (no training): seconds.
"""
import math
import pathlib
import re
import shutil


from infodrop_jax import sweep
from infodrop_jax.sweep import checks, overview

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
REPORTS = REPO_ROOT / 'reports'
README = (REPO_ROOT / 'README.md').read_text(encoding='utf-8')


def _readme_claims_table():
  lines = README.splitlines()
  (start,) = [i for i, line in enumerate(lines) if line.startswith('<!-- the claims table')]
  table = []
  for line in lines[start + 1:]:
    if not line.startswith('|'):
      break
    table.append(line)
  return table


def test_the_readme_table_is_what_the_committed_reports_decide():
  rows = overview.claim_rows(str(REPORTS))
  assert _readme_claims_table() == overview.markdown_table(rows)
  # One row per claim of every committed report, each linking to its report.
  expected = sum(len(sweep.load_sweep(str(d)).expect) for d in REPORTS.iterdir() if (d / sweep.SWEEP_FILE).exists())
  assert len(rows) == expected and all((REPORTS / r.report / sweep.REPORT_FILE).is_file() for r in rows)


def test_the_claims_files_rebuild_from_the_committed_reports(tmp_path):
  copy = tmp_path / 'reports'
  shutil.copytree(REPORTS, copy)
  png, md = overview.write(str(copy))
  assert pathlib.Path(md).read_text(encoding='utf-8') == (REPORTS / overview.TABLE).read_text(encoding='utf-8')
  assert pathlib.Path(png).stat().st_size > 50_000 and (REPORTS / overview.FIGURE).stat().st_size > 50_000
  assert f'![Where the paper stands: each claim\'s deciding comparison, its interval, and the verdict]' \
         f'(reports/{overview.FIGURE})' in README


def test_a_row_names_the_comparison_that_decides_and_the_precondition_that_gates():
  rows = {(r.report, r.name): r for r in overview.claim_rows(str(REPORTS))}
  anchor = rows[('vae_mnist_anchor', 'gaussian_near_the_iwae_anchor')]
  (only,) = [leaf for _, leaf in anchor.outcome.leaves]
  assert anchor.leaf is only and anchor.verdict_text() == 'agrees'
  assert anchor.effect_text() == f'{only.effect:.3g} [{only.low:.3g}, {only.high:.3g}] ({only.label})'
  fig3b = rows[('fig3b_cifar_cpu', 'information_le_binary')]
  assert fig3b.verdict_text() == 'cannot tell (precondition `binary_overfits` cannot tell)'
  assert rows[('fig5_tc_cpu', 'tc_decreases')].effect_text() == 'not measured'
  # 'all' that cannot tell: its least decided comparison; 'all' that disagrees: the clearest counterexample.
  fig3a = rows[('fig3a_mnist_cpu', 'information_le_binary')]
  assert fig3a.leaf.p == max(leaf.p for _, leaf in fig3a.outcome.leaves if leaf.ternary == 0)
  fig4 = rows[('fig4_occluded_cpu', 'main_error_falls')]
  assert fig4.outcome.final == checks.DISAGREE and fig4.leaf.ternary == checks.DISAGREE


# --- the README's Fig. 2 numbers ---------------------------------------------------------------------------------


def _close(quoted: str, value: float):
  """`quoted` (as printed, '−' or '-') is `value` rounded to the digits it shows."""
  quoted = quoted.replace('−', '-')
  decimals = len(quoted.split('.')[1]) if '.' in quoted else 0
  assert abs(float(quoted) - value) <= 0.5 * 10 ** -decimals + 1e-12, (quoted, value)


def _fig2_means():
  return {r['beta']: r for r in sweep.read_csv(REPORTS / 'fig2_cluttered_cpu' / sweep.MEANS_FILE)}


LAYERS = [f'block{i}_pool/noise' for i in range(1, 5)]


def test_the_readme_fig2_table_is_the_committed_means():
  means = _fig2_means()
  for beta in ('0.05', '0.5'):
    (row,) = [l for l in README.splitlines() if l.startswith(f'| {beta} | ')]
    cells = [c.strip() for c in row.strip('|').split('|')]
    error_d, error_n = cells[1].split(' / ')
    m, s = error_d.rstrip(' %').split(' ± ')
    _close(m, 100 * float(means[beta]['test_error_d:mean']))
    _close(s, 100 * float(means[beta]['test_error_d:std']))
    _close(error_n.rstrip(' %'), 100 * float(means[beta]['test_error_n:mean']))
    _close(cells[2].rstrip(' %'), 100 * float(means[beta]['train_error_d:mean']))
    for quoted, layer in zip(cells[3].split(', '), LAYERS):
      _close(quoted, float(means[beta][f'kl:{layer}:mean']))
    for quoted, layer in zip(cells[4].split(', '), LAYERS):
      m, s = quoted.split(' ± ')
      _close(m, float(means[beta][f'mass_in_box:{layer}:mean']))
      _close(s, float(means[beta][f'mass_in_box:{layer}:std']))
    for quoted, layer in zip(cells[5].split(', '), LAYERS):
      _close(quoted, float(means[beta][f'pointing:{layer}:mean']))
  chance = float(sweep.read_csv(REPORTS / 'fig2_cluttered_cpu' / sweep.RESULTS_FILE)[0]['localization_chance'])
  _close(re.search(r'heat in the digit box \(chance ([0-9.]+)\)', README).group(1), chance)
  # The results table's line quotes the same test errors.
  (line,) = [l for l in README.splitlines() if l.startswith('| `cluttered_info:cpu` (48×48, 6 epochs)')]
  for beta, quoted in zip(('0.05', '0.5'), re.search(r'\| ([0-9.]+ ± [0-9.]+) % / ([0-9.]+ ± [0-9.]+) %', line)
                          .groups()):
    m, s = quoted.split(' ± ')
    _close(m, 100 * float(means[beta]['test_error_d:mean']))
    _close(s, 100 * float(means[beta]['test_error_d:std']))


def test_the_readme_fig2_intervals_are_the_report_s():
  config = sweep.load_sweep(str(REPORTS / 'fig2_cluttered_cpu'))
  rows = sweep.read_csv(REPORTS / 'fig2_cluttered_cpu' / sweep.RESULTS_FILE)
  outcome = checks.evaluate(config, checks.Evidence(config, rows)).claims[0]
  assert outcome.name == 'every_layer_more_focus'
  leaves = {metric.split(':')[1]: leaf for metric, leaf in outcome.leaves}
  text = ' '.join(README.split('- What does not, at this scale:')[1].split('\n\n')[0].split())
  quoted = re.findall(r'(−?[0-9.]+) \[(−?[0-9.]+), (−?[0-9.]+)\]', text)
  assert len(quoted) == 4
  for (effect, low, high), layer in zip(quoted, (LAYERS[2], LAYERS[0], LAYERS[1], LAYERS[3])):
    leaf = leaves[layer]
    for q, v in ((effect, leaf.effect), (low, leaf.low), (high, leaf.high)):
      assert q.replace('−', '-') == f'{v:.3g}', (layer, q, v)
  assert leaves[LAYERS[2]].ternary == checks.DISAGREE
  assert all(leaves[l].ternary == checks.CANNOT_TELL for l in (LAYERS[0], LAYERS[1], LAYERS[3]))
  assert math.isfinite(leaves[LAYERS[2]].df)
