"""Where the paper stands: every claim of every committed report in one table and one figure.

  python -m infodrop_jax.sweep.overview [reports]      # writes reports/claims.png and reports/claims.md

Each report directory (its committed results.csv and sweep.json, and the information-plane arrays where it has
them) is decided again by `checks.evaluate`, as `--mode=report` decides it. One row per claim: what the paper
claims, the setup that tested it, the comparison that decides the verdict (`Outcome.headline`: the weakest agreeing
one of an 'all', the strongest of an 'any', the strongest disagreeing one) as its effect with its simultaneous 95 %
interval, and the verdict with the precondition that made it "cannot tell", if any. The README's table of reports
is `markdown_table` of these rows (tests/test_sweep_overview.py keeps the two equal).
"""
from __future__ import annotations

import dataclasses
import math
import os
import sys
from collections.abc import Sequence

from infodrop_jax.sweep import checks
from infodrop_jax.sweep.files import REPORT_FILE, RESULTS_FILE, SWEEP_FILE
from infodrop_jax.sweep.inference import AGREE, CANNOT_TELL, DISAGREE, fmt
from infodrop_jax.sweep.results import read_csv
from infodrop_jax.sweep.spec import load_sweep

FIGURE = 'claims.png'
TABLE = 'claims.md'
# The paper's figures first, then its neighbours; a report not named here comes after them, by name.
ORDER = ('fig2_cluttered_cpu', 'fig3a_mnist_cpu', 'fig3b_cifar_cpu', 'fig4_occluded_cpu', 'fig5_tc_cpu',
         'fig6_info_cpu', 'ip_mnist_cpu', 'vae_mnist_cpu', 'vae_mnist_anchor')
COLOURS = {AGREE: '#1a9850', DISAGREE: '#d73027', CANNOT_TELL: '#7f7f7f'}


@dataclasses.dataclass
class ClaimRow:
  report: str  # the directory under reports/
  sweep: str  # the sweep config's name, e.g. fig3a_mnist:cpu
  name: str  # the claim's key in `expect`
  claim: str  # its description (what the paper claims, as this check reads it)
  setup: str  # config.report.setup
  outcome: checks.Outcome

  @property
  def leaf(self) -> checks.Leaf | None:
    head = self.outcome.headline() if self.outcome.measured else None
    return head[1] if head else None

  def effect_text(self) -> str:
    leaf = self.leaf
    if not self.outcome.measured:
      return 'not measured'
    if leaf is None or not math.isfinite(leaf.effect):
      return 'no value'
    if not math.isfinite(leaf.se):
      return f'{fmt(leaf.effect, 3)}, no standard error ({leaf.label})'
    interval = f'[{fmt(leaf.low, 3)}, {fmt(leaf.high, 3)}]' if leaf.se > 0 else '(exact)'
    metric = next((m for m, l in self.outcome.leaves if l is leaf), '')
    where = leaf.label + (f', {metric}' if len({m for m, _ in self.outcome.leaves}) > 1 else '')
    return f'{fmt(leaf.effect, 3)} {interval} ({where})'

  def verdict_text(self) -> str:
    word = self.outcome.word
    if self.outcome.gated:
      return f'{word} ({"; ".join(self.outcome.gated)})'
    return word


def report_dirs(root: str) -> list[str]:
  found = [d for d in os.listdir(root) if os.path.isfile(os.path.join(root, d, SWEEP_FILE))
           and os.path.isfile(os.path.join(root, d, RESULTS_FILE))]
  return sorted(found, key=lambda d: (ORDER.index(d) if d in ORDER else len(ORDER), d))


def claim_rows(root: str) -> list[ClaimRow]:
  """One row per claim of every report under `root`, decided from its committed files."""
  rows = []
  for report in report_dirs(root):
    workdir = os.path.join(root, report)
    config = load_sweep(workdir)
    verdict = checks.evaluate(config, checks.Evidence(config, read_csv(os.path.join(workdir, RESULTS_FILE)),
                                                      workdir))
    setup = str(config.report.get('setup') or config.report.caption)
    for outcome in verdict.claims:
      rows.append(ClaimRow(report, str(config.name), outcome.name, str(outcome.spec.get('description') or ''),
                           setup, outcome))
  return rows


def _cell(text: str) -> str:
  return text.replace('|', '\\|')


def markdown_table(rows: Sequence[ClaimRow], root: str = 'reports') -> list[str]:
  """The README's table: one line per claim (claim | setup | effect [95 % interval] | verdict), linked to its
  report."""
  lines = ['| claim | setup | effect [95 % interval] (the deciding comparison) | verdict |', '|---|---|---|---|']
  for row in rows:
    link = f'[`{row.report}`]({root}/{row.report}/{REPORT_FILE})'
    lines.append(f'| {_cell(row.claim)} (`{row.name}`) | {_cell(row.setup)}: {link} | {_cell(row.effect_text())} | '
                 f'**{_cell(row.verdict_text())}** |')
  return lines


def plot(rows: Sequence[ClaimRow], path: str) -> str:
  """One row per claim: the deciding comparison's interval (bar) and estimate (dot) against the region where the
  claim holds (green band; its boundary a line), coloured by the verdict, with the claim and setup on the left and
  the verdict on the right. Each row has its own axis: the claims are in different units."""
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top  (no global backend change)
  fig = Figure(figsize=(15, 0.62 * len(rows) + 1.2))
  grid = fig.add_gridspec(len(rows), 3, width_ratios=(5.2, 3.0, 2.3), hspace=0.9, wspace=0.05,
                          left=0.01, right=0.99, top=1 - 0.7 / (0.62 * len(rows) + 1.2), bottom=0.02)
  fig.suptitle('Where the paper stands: each claim\'s deciding comparison, its simultaneous 95 % interval (bar), the '
               'region where the claim holds (green) and the verdict', fontsize=10)
  for i, row in enumerate(rows):
    text_ax, ax, verdict_ax = (fig.add_subplot(grid[i, j]) for j in range(3))
    for a in (text_ax, verdict_ax):
      a.axis('off')
    claim = f'{row.sweep} · {row.claim}'
    claim = claim if len(claim) <= 112 else claim[:111] + '…'
    text_ax.text(0, 0.75, claim, fontsize=7.5, va='center', transform=text_ax.transAxes)
    text_ax.text(0, 0.15, row.setup, fontsize=6.5, color='#555555', va='center', transform=text_ax.transAxes)
    colour = COLOURS[row.outcome.final] if row.outcome.measured else COLOURS[CANNOT_TELL]
    verdict_ax.text(0.02, 0.5, row.verdict_text(), fontsize=7, color=colour, va='center', wrap=True,
                    transform=verdict_ax.transAxes, fontweight='bold')
    ax.set_yticks([])
    for side in ('left', 'right', 'top'):
      ax.spines[side].set_visible(False)
    ax.tick_params(axis='x', labelsize=6, length=2, pad=1)
    leaf = row.leaf
    if leaf is None or not math.isfinite(leaf.effect):
      ax.text(0.5, 0.5, 'not measured' if not row.outcome.measured else 'no value', ha='center', va='center',
              fontsize=7, color='#555555', transform=ax.transAxes)
      ax.set_xticks([])
      continue
    low, high = (leaf.low, leaf.high) if math.isfinite(leaf.se) else (leaf.effect, leaf.effect)
    finite = [v for v in (low, high, leaf.effect, leaf.lo, leaf.hi) if math.isfinite(v)]
    span = (max(finite) - min(finite)) or max(abs(leaf.effect), 1.0)
    x0, x1 = min(finite) - 0.15 * span, max(finite) + 0.15 * span
    ax.set_xlim(x0, x1)
    ax.set_ylim(-1, 1)
    ax.axvspan(max(leaf.lo, x0), min(leaf.hi, x1), color='#1a9850', alpha=0.12, lw=0)
    for boundary in (leaf.lo, leaf.hi):
      if math.isfinite(boundary):
        ax.axvline(boundary, color='#1a9850', lw=0.8)
    if math.isfinite(leaf.se):
      ax.plot([low, high], [0, 0], color=colour, lw=2.2, solid_capstyle='butt')
    ax.plot([leaf.effect], [0], 'o', color=colour, ms=4)
    ax.text(0.0, 0.95, leaf.label, fontsize=6, color='#555555', va='top', transform=ax.transAxes)
  fig.savefig(path, dpi=110)
  return path


def write(root: str = 'reports') -> tuple[str, str]:
  """reports/claims.png and reports/claims.md (the README's table) from every report under `root`."""
  rows = claim_rows(root)
  png = plot(rows, os.path.join(root, FIGURE))
  md = os.path.join(root, TABLE)
  with open(md, 'w', encoding='utf-8') as f:
    f.write('\n'.join(['# Where the paper stands', '', f'![{FIGURE}]({FIGURE})', '',
                       *markdown_table(rows, '.'), '']))
  return png, md


if __name__ == '__main__':
  for written in write(sys.argv[1] if len(sys.argv) > 1 else 'reports'):
    print(f'wrote {written}')
