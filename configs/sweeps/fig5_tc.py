"""Paper Fig. 5: test error and total correlation of the last noisy layer vs beta, All-CNN-32, softplus, 25 % filters.

  python launch.py --config=configs/sweeps/fig5_tc.py:cpu --workdir=workdirs/fig5_cpu --mode=sweep

Base: configs/cifar_softplus.py with model.filter_percentage=0.25 (information dropout, learned log-normal prior).
TC is the analysis' Gaussian total correlation of log z of the last noisy layer, noise on, over the test split
(analysis.json total_correlation.tc_per_dim_nats). The paper gives no beta grid; we use 0.01 … 30.

Variants:
  (full)  beta 0.01/0.1/0.3/1/3/10/30 × seeds 0,1 = 14 points on canonical CIFAR-10: about 5–6 min per point on one
          H100 (estimated from cifar_info's 309 s for 200 epochs), under 1.5 h on one H100.
  :cpu    beta 0.1/1/10 × seeds 0,1 = 6 points, 5 epochs of the whole 50 000-image JPEG-proxy training split
          (lr ×0.1 at 4): 433–520 s per point on a 2-core CPU (train + analysis), 46 min in all (2026-12-02).
          Result (reports/fig5_tc_cpu): cannot tell. The TC of the noisy log z falls 1.04 → 0.42 → 0.11 nats per
          dimension, but noise lowers TC by itself and 0.086 is the floor of independent features at this (d, n);
          these runs predate the noise-off TC and its floor (a re-run of --mode=analyze on their checkpoints gives
          them). The test error only rises (31.5 → 37.6 → 62 %), and the runs recorded no training error, so the
          precondition that the smallest beta overfits is not measured.
  :smoke  beta 0.1/10, 1 epoch of 512 proxy images, 10 % filters.
"""
from __future__ import annotations

from configs.sweeps import cifar_common
from infodrop_jax import sweep


def get_config(config_string: str | None = None):
  variant = config_string or ''
  config = sweep.new_config('fig5_tc' + (f':{variant}' if variant else ''), 'configs/cifar_softplus.py')
  config.axes.beta = sweep.axis('loss.beta', (0.01, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0))
  config.seeds = (0, 1)
  config.overrides = cifar_common.FULL_OVERRIDES + ('model.filter_percentage=0.25',)
  config.data = 'canonical'
  if variant == 'cpu':
    config.axes.beta = sweep.axis('loss.beta', (0.1, 1.0, 10.0))
    config.seeds = (0, 1)
    config.overrides = cifar_common.CPU_OVERRIDES + ('model.filter_percentage=0.25',)
    config.data = 'proxy'
  elif variant == 'smoke':
    config.variant = 'smoke'
    config.axes.beta = sweep.axis('loss.beta', (0.1, 10.0))
    config.seeds = (0,)
    config.overrides = cifar_common.SMOKE_OVERRIDES
    config.data = ''
  elif variant:
    raise ValueError(f'unknown variant {variant!r}; expected one of ("", "cpu", "smoke").')
  config.claim = ('Increasing beta, the test error first decreases (less overfitting) and the representation becomes '
                  'increasingly disentangled (lower total correlation); too large a beta lets too little '
                  'information through and the error rises sharply (paper Fig. 5).')
  config.expect.tc_decreases = dict(
      check='decreasing', metric='tc_excess_per_dim_nats', along='beta',
      description=('total correlation per dimension of the noise-off log f(x), above the independence floor of its '
                   '(d, n), at the largest beta < at the smallest'))
  config.expect.error_dips = dict(check='interior_min', metric='test_error_d', along='beta',
                                  description='the lowest test error (D) is at an intermediate beta')
  smallest_beta = f'beta={sweep.label_of(config.axes.beta["values"][0])}'
  config.preconditions.smallest_beta_overfits = sweep.baseline_overfits(smallest_beta, gates=('error_dips',))
  config.preconditions.tc_above_the_floor = dict(
      check='above', metric='tc_clean_per_dim_nats', reference='tc_floor_per_dim_nats', where=smallest_beta,
      gates=('tc_decreases',),
      description='at the smallest beta the total correlation of log f(x) is above its independence floor',
      why='a total correlation already at the floor of independent features cannot fall with beta')
  config.report.x = 'beta'
  config.report.x_label = 'β (log scale)'
  config.report.setup = {'cpu': 'CIFAR-10 proxy, All-CNN-32 softplus, 25 % filters, β 0.1, 1, 10 × 2 seeds, 5 epochs'}.get(variant, '')
  config.report.caption = 'All-CNN-32 with softplus units (25 % filters), information dropout; total correlation of the last noisy layer'
  config.report.xscale = 'log'
  config.report.metrics = ('test_error_d', 'test_error_n', 'tc_per_dim_nats')
  return config
