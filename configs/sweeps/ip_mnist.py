"""Information planes of MNIST dropout nets (after Adilova, Geiger & Fischer, ICLR 2023): information vs Gaussian
dropout (at two noise levels) on a narrow noisy layer, 3 seeds each, so the planes have error bars and stay clear of the estimator's ceiling.

  python launch.py --config=configs/sweeps/ip_mnist.py:cpu --workdir=workdirs/ip_mnist_cpu --mode=sweep \
      --config.parallel=2
  python launch.py --workdir=workdirs/ip_mnist_cpu --mode=report      # report.md and the planes from the workdir

Base: configs/mnist_ip.py (FC 784-512-128-W-10, ReLU, noise on the W-unit layer only, SGD 0.1 momentum 0.9 cosine,
β = 3 for information dropout (ReLU, log-uniform prior, max_alpha 0.7), Gaussian dropout N(1, 0.25)), with the
noisy layer W = 2 units instead of 32. Why 2: the I(X;Z) estimate of M = 1000 examples cannot exceed log M = 6.91
nats, and a 32-unit layer's KL is 37–48 nats, so there the estimate sits at the ceiling all run long and the plane can
show neither compression nor its absence. At 50 epochs on seed 0 (2026-12-02): W = 4 kept 6.1–6.4 nats, W = 3 went
above 5.9 until epoch 12, W = 2 stayed ≤ 5.71 at every capture (test error 3.6 %). max_alpha 2 stayed at the
ceiling and max_alpha 5 did not train.

Each point captures the plane every 2 epochs on M = 1000 fixed training and test examples (`information_plane`);
the report overlays the methods' planes as the mean over seeds with ± one std bars at every capture
(`report.information_plane`). Compression is decided on the training examples' curves over windows fixed here
(epochs 10–30 against 80–100), with the precondition that the final estimate is stable when M is doubled
(`--mode=analyze` measures it on the final checkpoint).

Variants:
  :cpu    3 noises × seeds 0,1,2 = 9 points, 100 epochs each (the :cpu base): about 3.5 min per point, two at a
          time, on a 2-core CPU (about 18 min in all). Result (reports/ip_mnist_cpu, 2026-12-02): cannot tell;
          the fall from epochs 10–30 to 80–100 is −0.15, 0.009 and 0.099 nats for information and Gaussian
          p = 0.2 and 0.05 dropout, none clear with 3 seeds, and the runs predate the M-stability measurement;
          test error 3.9 % / 18.9 % / 6.4 %.
  (full)  the same at 200 epochs (the base's full variant), evaluated every 10 epochs: on one H100 an estimated
          1–2 min per point (a small MLP: start-up, compilation and the captures dominate; not measured).
  :smoke  1024 examples, 2 epochs: the tests' sweep.
"""
from __future__ import annotations

from infodrop_jax import sweep

NOISY_WIDTH = 2
HIDDEN_SIZES = f'model.hidden_sizes=(512,128,{NOISY_WIDTH})'


def get_config(config_string: str | None = None):
  variant = config_string or ''
  if variant not in ('', 'cpu', 'smoke'):
    raise ValueError(f'unknown variant {variant!r}; expected one of ("", "cpu", "smoke").')
  config = sweep.new_config('ip_mnist' + (f':{variant}' if variant else ''), 'configs/mnist_ip.py', variant)
  # Gaussian dropout at the base's p = 0.2 (σ = 0.5) and at p = 0.05 (σ = 0.23, about the α information dropout
  # learns here); dropout_rate does not act on information dropout, whose noise is α(x).
  config.axes.dropout = sweep.axis(('model.dropout', 'model.dropout_rate'),
                                   (('information', 0.2), ('gaussian', 0.2), ('gaussian', 0.05)),
                                   ('information', 'gaussian_p0.2', 'gaussian_p0.05'))
  config.seeds = (0, 1, 2)
  config.overrides = (HIDDEN_SIZES, 'logging.progress_bar=False')
  if variant == 'smoke':
    config.seeds = (0, 1)
    config.overrides += ('train.num_epochs=2', 'optim.decay_epochs=2', 'logging.tensorboard=False')
  config.claim = ('The information-plane paper (Adilova et al. 2023) measures I(X;Z) of dropout layers with noise of '
                  'a continuous distribution, where it is finite, and finds compression (I(X;Z) falling late in '
                  'training) in some settings and not in others; here: information vs Gaussian dropout on a 2-unit '
                  'noisy layer of an MNIST MLP.')
  # Windows fixed before the curves were read: after the first fast rise (10–30) against the last fifth (80–100).
  windows = dict(early=(10, 30), late=(80, 100)) if variant != 'smoke' else dict(early=(0, 1), late=(1, 2))
  config.expect.compression_in_some_setting = dict(
      check='window_fall', metric='hidden3', along='dropout', mode='any', direction='fall', **windows,
      description='for some dropout method, I(X;Z) on the training examples falls from the early to the late window')
  config.expect.no_compression_in_another = dict(
      check='window_fall', metric='hidden3', along='dropout', mode='any', direction='flat', margin=0.1, **windows,
      margin_reason=('0.1 nats is five times the standard error of one capture\'s estimate (about 0.02 nats) and a '
                     'few per cent of the I(X;Z) these layers reach'),
      description='for some dropout method, I(X;Z) does not fall: early − late within ± 0.1 nats')
  config.preconditions.stable_in_m = dict(
      check='stable_in_sample', metric='ixz_m:*', doubled='ixz_2m:*', stderr='ixz_m_stderr:*',
      doubled_stderr='ixz_2m_stderr:*',
      description='the final I(X;Z) estimate moves by less than its noise when M is doubled',
      why=('the mixture estimate is biased low by up to log M − I(X;Z) when M is too small; an estimate that '
           'doubling M does not move is clear of that bias'))
  config.report.x = 'dropout'
  config.report.x_label = 'dropout method'
  config.report.setup = {'cpu': 'MNIST, FC 784-512-128-2-10, 3 noises × 3 seeds, 100 epochs, M = 1000'}.get(variant, '')
  config.report.caption = f'MNIST FC 784-512-128-{NOISY_WIDTH}-10, noise on the {NOISY_WIDTH}-unit layer'
  config.report.metrics = ('test_error_d', 'test_error_n', 'ixz_final:*', 'ixz_headroom:*')
  config.report.information_plane = True
  return config
