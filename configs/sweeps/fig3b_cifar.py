"""Paper Fig. 3b: CIFAR-10 test error of All-CNN-32 with softplus units vs the fraction of filters, per method.

  python launch.py --config=configs/sweeps/fig3b_cifar.py:cpu --workdir=workdirs/fig3b_cpu --mode=sweep
  python launch.py --config=configs/sweeps/fig3b_cifar.py --workdir=W --mode=sweep --config.parallel=8  # 8 GPUs

Base: configs/cifar_softplus.py (All-CNN-32, softplus + learned log-normal prior, beta 3, 200 epochs).
The paper gives no filter fractions or seed count for Fig. 3b; we use 10/25/50/100 % and 2 seeds.

Variants:
  (full)  filters 10/25/50/100 % × information, binary, lognormal_constant, gaussian, none × seeds 0,1 = 40 points on
          canonical CIFAR-10: about 5–6 min per point on one H100 (309 s measured for cifar_info's 200 epochs at
          100 % filters; smaller nets are not much faster on a GPU), about 4 h on one H100, 30 min on 8.
  :cpu    filters 10/25 % × information, binary × seeds 0,1 = 8 points, 5 epochs of the whole 50 000-image
          JPEG-proxy training split (lr ×0.1 at 4), two at a time (--config.parallel=2), each on one core: 437–539 s
          training at 10 %, 910–1147 s at 25 %, plus 150–300 s analysis, 65 min on a 2-core CPU with the test suite
          beside it (2026-12-03; about 40 min alone, estimated). Result (reports/fig3b_cifar_cpu): cannot tell;
          no net overfits after 5 epochs (the precondition cannot tell), and with 2 seeds neither difference
          (45.4 vs 51.1 % at 10 %, 49.7 vs 41.4 % at 25 %) is clear. It needs the full 200-epoch variant.
  :smoke  filters 10 % × information, binary, 1 epoch of 512 proxy images.
"""
from __future__ import annotations

from configs.sweeps import cifar_common
from infodrop_jax import sweep


def get_config(config_string: str | None = None):
  variant = config_string or ''
  config = sweep.new_config('fig3b_cifar' + (f':{variant}' if variant else ''), 'configs/cifar_softplus.py')
  config.axes.dropout = sweep.axis('model.dropout', ('information', 'binary', 'lognormal_constant', 'gaussian', 'none'))
  config.axes.filters = sweep.axis('model.filter_percentage', (0.1, 0.25, 0.5, 1.0))
  config.seeds = (0, 1)
  config.overrides = cifar_common.FULL_OVERRIDES
  config.data = 'canonical'
  if variant == 'cpu':
    config.axes.dropout = sweep.axis('model.dropout', ('information', 'binary'))
    config.axes.filters = sweep.axis('model.filter_percentage', (0.1, 0.25))
    config.seeds = (0, 1)
    config.overrides = cifar_common.CPU_OVERRIDES
    config.data = 'proxy'
  elif variant == 'smoke':
    config.variant = 'smoke'
    config.axes.dropout = sweep.axis('model.dropout', ('information', 'binary'))
    config.axes.filters = sweep.axis('model.filter_percentage', (0.1,))
    config.seeds = (0,)
    config.overrides = cifar_common.SMOKE_OVERRIDES
    config.data = ''
  elif variant:
    raise ValueError(f'unknown variant {variant!r}; expected one of ("", "cpu", "smoke").')
  config.claim = ('On CIFAR-10 with All-CNN-32 and softplus units, information dropout gives a lower test error than '
                  'the other dropout methods, the more so the fewer filters the network has (paper Fig. 3b, read '
                  'with the Fig. 3 caption).')
  config.expect.information_le_binary = dict(
      check='le', metric='test_error_d', by='dropout', a='information', b='binary', along='filters',
      description='mean test error (D) of information ≤ binary at every filter fraction')
  config.preconditions.binary_overfits = sweep.baseline_overfits('dropout=binary')
  config.report.x = 'filters'
  config.report.x_label = "filters (share of All-CNN-32's)"
  config.report.setup = {'cpu': 'CIFAR-10 JPEG proxy, All-CNN-32 softplus, 10 and 25 % filters × 2 seeds, 5 epochs'}.get(variant, '')
  config.report.caption = 'All-CNN-32 with softplus units on CIFAR-10; information dropout with the learned log-normal prior at β = 3'
  config.report.series = 'dropout'
  config.report.metrics = ('test_error_d', 'test_error_n', 'train_error_d')
  return config
