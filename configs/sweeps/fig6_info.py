"""Paper Fig. 6: information in each noisy layer, in total and per unit, vs the fraction of filters (All-CNN-32,
softplus, information dropout).

  python launch.py --config=configs/sweeps/fig6_info.py:cpu --workdir=workdirs/fig6_cpu --mode=sweep

Base: configs/cifar_softplus.py. The numbers are the analysis' test-set mean KL of each noisy layer, noise on
(analysis.json info_per_layer, nats per example) and that divided by the layer's units (info_per_unit).

Variants:
  (full)  filters 10/25/50/75/100 % × seeds 0,1 = 10 points on canonical CIFAR-10: about 5–6 min per point on one
          H100 (estimated from cifar_info's 309 s for 200 epochs), about 1 h on one H100.
  :cpu    filters 10/20/30 % × seeds 0,1 = 6 points, 5 epochs of the whole 50 000-image JPEG-proxy training split
          (lr ×0.1 at 4): 264–766 s per point on a 2-core CPU (train + analysis; 10 % is the fast one), 48 min in all
          (2026-12-02; the runs shared the CPU with tests for part of it). Result (reports/fig6_info_cpu): cannot
          tell; about 1020 nats in block 1 and 600–730 in block 2 at every fraction, per unit 0.44 → 0.14 and
          0.58 → 0.16, but with 2 seeds (df ≈ 1) only block 2's per-unit fall is clear: more seeds would decide.
  :smoke  filters 5/10 %, 1 epoch of 512 proxy images.
"""
from __future__ import annotations

from configs.sweeps import cifar_common
from infodrop_jax import sweep


def get_config(config_string: str | None = None):
  variant = config_string or ''
  config = sweep.new_config('fig6_info' + (f':{variant}' if variant else ''), 'configs/cifar_softplus.py')
  config.axes.filters = sweep.axis('model.filter_percentage', (0.1, 0.25, 0.5, 0.75, 1.0))
  config.seeds = (0, 1)
  config.overrides = cifar_common.FULL_OVERRIDES
  config.data = 'canonical'
  if variant == 'cpu':
    config.axes.filters = sweep.axis('model.filter_percentage', (0.1, 0.2, 0.3))
    config.seeds = (0, 1)
    config.overrides = cifar_common.CPU_OVERRIDES
    config.data = 'proxy'
  elif variant == 'smoke':
    config.variant = 'smoke'
    config.axes.filters = sweep.axis('model.filter_percentage', (0.05, 0.1))
    config.seeds = (0,)
    config.overrides = cifar_common.SMOKE_OVERRIDES
    config.data = ''
  elif variant:
    raise ValueError(f'unknown variant {variant!r}; expected one of ("", "cpu", "smoke").')
  config.claim = ('The total information through each dropout layer varies little with the number of filters (the '
                  'second layer transmitting less than the first), while with fewer filters each unit lets more '
                  'information through (paper Fig. 6).')
  config.expect.per_unit_falls_with_filters = dict(
      check='decreasing', metric='info_unit:*', along='filters',
      description='information per unit at the most filters < at the fewest, in every noisy layer')
  config.expect.total_about_constant = dict(
      check='range_le', metric='info_layer:*', along='filters', relative_margin=0.5,
      margin_reason=('the paper calls the totals about constant while the per-unit values change several-fold; '
                     'a change of under half the mean is that reading'),
      description='total information per layer varies by less than 50 % of its mean across filter fractions')
  config.report.x = 'filters'
  config.report.x_label = "filters (share of All-CNN-32's)"
  config.report.setup = {'cpu': 'CIFAR-10 proxy, All-CNN-32 softplus, 10, 20, 30 % filters × 2 seeds, 5 epochs'}.get(variant, '')
  config.report.caption = 'All-CNN-32 with softplus units, information dropout (learned log-normal prior) at β = 3'
  config.report.metrics = ('info_layer:*', 'info_unit:*', 'test_error_d')
  return config
