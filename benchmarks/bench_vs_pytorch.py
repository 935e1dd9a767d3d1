"""Train-step throughput of All-CNN-32, ours (JAX) against the same network written in PyTorch, side by side.

  pip install -r requirements-bench.txt   # PyTorch: a benchmark-only extra, not a dependency of infodrop_jax
  python benchmarks/bench_vs_pytorch.py --platform=cpu --batch=100 --steps=10 --rounds=4 --warmup=5 [--torch_compile]
  GLIBC_TUNABLES=glibc.malloc.hugetlb=1 python benchmarks/bench_vs_pytorch.py ...   # huge pages for malloc (both)
  python benchmarks/bench_vs_pytorch.py --platform=gpu --batch=100 --steps=50 --rounds=5 --json=/tmp/vs_pytorch.json

Per filter percentage and method ('information': Information Dropout on both pooling layers; 'none': the same net
without the noise) it builds these variants of one SGD step (Nesterov momentum 0.9, lr 0.01, loss CE + beta·Lz +
weight_decay·Σ||w||²/2 with beta 3, N_train 50,000, weight decay 1e-3, synthetic CIFAR-shaped data):
- ours: `jax.jit` of `train.train_step` on one device, one step per call, state donated, batch pre-placed (as
  bench_train_step.py; benchmarks/allcnn_step.py), once per `--cpu_speedups` value (default 'on,off' on CPU, so
  one run records both ratios against PyTorch):
  - 'speed-ups on': what `config.train.cpu_speedups` 'on' (the trainer's 'auto' on a CPU) trains, the model built
    from `infodrop_jax.cpu.model_parts()` (convolutions with canonical gradients, closed-form BatchNorm gradient,
    unrolled Threefry noise) and compiled with `cpu.xla.compiler_options()` (XLA:CPU's YNNPACK convolutions off);
  - 'speed-ups off': plain Flax (nn.Conv, nn.BatchNorm, jax.random) compiled with XLA's own defaults, what a
    library user gets without the speed-ups (the trainer's 'off').
  The XLA options come with the model parts, as in the trainer: 'on' has both, 'off' neither (the options alone,
  per convolution: bench_conv_pieces.py --xla_cpu_defaults). On a GPU the default is 'off' (the trainer's 'auto'
  there); 'on' builds the CPU parts, which are Flax's and JAX's own off the CPU, and no XLA options;
- ours as the trainer runs (`--ours_runs=trainer`, on by default): the same step on all of the process's devices
  (the batch split over them), `--steps_per_call` steps per call in a `lax.scan`, or one step per call where the
  trainer drives its steps from the host (one CPU device with speed-ups off: plain nn.Conv's gradients would run
  as a naive loop nest inside the scan; `train.Run.host_loops`: then, on one device, it is the variant above and
  is not timed twice). On a CPU that is one device unless `--host_devices` asks for more (as launch.py's flag,
  default 1; `infodrop_jax.cpu.process`);
- torch eager: the PyTorch model below, float32, `torch.set_num_threads` left at its default (`--torch_threads`);
- torch.compile (`--torch_compile`; on by default on GPU only, since it compiles slowly on CPU) of model + loss,
  with backward and the optimizer step eager;
- GPU only (`--bfloat16`, on by default there): ours with `config.model.dtype='bfloat16'`, and torch eager and
  torch.compile with bf16 autocast and channels_last.
Huge pages for malloc are no flag here: they are the environment variable `GLIBC_TUNABLES=glibc.malloc.hugetlb=1`,
which glibc reads when a process starts, so set it (or not) when starting the benchmark; PyTorch runs in the same
process, with the same allocator settings, and the machine line records GLIBC_TUNABLES and the kernel's transparent
huge page mode.

Each variant is compiled and warmed up (`--warmup` steps), then `--rounds` rounds are timed; in each round every
variant runs `--steps` steps in turn (starting one variant later each round), so load on the machine hits all alike.

Prints the machine line, the trainable parameter counts of both frameworks (asserted equal), the loss of the first
step of each variant (`--check`: finite, CE within 0.5 of log 10, totals of the same magnitude), and a markdown table:
median images/s over the rounds with [min–max], and ratios of medians against torch eager and torch.compile of the
same precision from this run. `--json` also writes every number.

It also puts every variant against the machine's matrix-product rate, measured in the same process before the cells
(`--matmul_size`: torch.mm and jnp.dot of two square matrices, one device, the better of the two): GFLOP/s = the
step's FLOPs (XLA's cost analysis of ours' first one-device step, speed-ups on where timed; both frameworks
compute the same network, and every variant of a cell is put against that one count; `--json` also has each
one-device step's own count, a few % apart since the speed-ups write the gradients differently) × steps/s,
and its share of that rate. A step cannot run much above the rate its convolutions' matrix arithmetic allows, so the
share bounds what any framework can still gain on that machine.
"""
import contextlib
import datetime
import functools
import itertools
import json
import math
import os
import platform
import statistics
import sys
import time

from absl import app
from absl import flags

import allcnn_step  # benchmarks/, beside this script

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _REPO)
from infodrop_jax.cpu import process as cpu_process  # pylint: disable=g-import-not-at-top,wrong-import-position

flags.DEFINE_enum('platform', 'cpu', ['cpu', 'gpu'], 'Where both frameworks run (gpu: one CUDA device each).')
flags.DEFINE_integer('batch', 100, 'Batch size.')
flags.DEFINE_integer('steps', 10, 'Steps per variant per timed round.')
flags.DEFINE_integer('rounds', 5, 'Timed rounds; images/s is the median over them.')
flags.DEFINE_integer('warmup', 3, 'Untimed steps per variant after compiling (at least 1: its loss is checked).')
flags.DEFINE_list('filter_percentages', ['1.0', '0.25'], 'All-CNN-32 width multipliers.')
flags.DEFINE_list('methods', ['information', 'none'], "Dropout methods: 'information' and/or 'none'.")
flags.DEFINE_bool('torch_compile', None, 'Also time torch.compile (default: on for gpu, off for cpu).')
flags.DEFINE_string('torch_compile_mode', 'default', 'torch.compile mode, e.g. default, reduce-overhead, max-autotune.')
flags.DEFINE_bool('bfloat16', None, 'Also time bf16 (ours: model dtype; torch: autocast + channels_last); gpu only, '
                  'default on there.')
flags.DEFINE_integer('torch_threads', None, "torch.set_num_threads; default: PyTorch's own (reported). On a CPU "
                     'shared with other jobs its OpenMP team can be many times slower than one thread.')
flags.DEFINE_bool('cudnn_benchmark', True, 'torch.backends.cudnn.benchmark on gpu (XLA autotunes its convs too).')
flags.DEFINE_list('fuse_alpha', ['true'], "Ours with config.model.fuse_alpha on (the default) and/or off "
                  "('false,true' times both in the same run; only the information method has an alpha projection).")
flags.DEFINE_list('cpu_speedups', None, "Ours with the CPU speed-ups ('on': infodrop_jax.cpu.model_parts() and "
                  "cpu.xla.compiler_options()) and/or without them ('off': plain Flax, XLA's default options), as "
                  "config.train.cpu_speedups; default 'on,off' on cpu, 'off' on gpu.")
flags.DEFINE_list('ours_runs', ['step', 'trainer'], "Ours one step per call on one device ('step') and/or as "
                  "the trainer runs it ('trainer': all devices, --steps_per_call steps per call).")
flags.DEFINE_integer('steps_per_call', 5, "Steps per compiled call of ours in the 'trainer' run (--steps and "
                     '--warmup are rounded up to whole calls there).')
flags.DEFINE_string('host_devices', '1', "CPU only: XLA CPU devices for ours' 'trainer' run, as launch.py's "
                    "--host_devices (default 1; 'auto': 2 on 2+ cores). A count already in XLA_FLAGS wins.")
flags.DEFINE_integer('matmul_size', 4096, 'Side of the square float32 (and bf16) matrices whose product sets the '
                     "machine's matrix-product rate (0: skip it).")
flags.DEFINE_bool('check', True, 'Check the first-step losses of every variant (finite, CE near log 10).')
flags.DEFINE_string('json', None, 'Also write all numbers to this JSON file.')
FLAGS = flags.FLAGS

_TORCH_MISSING = ('PyTorch is not installed: pip install -r requirements-bench.txt (a benchmark-only extra, not a '
                  'dependency of infodrop_jax)')
N_TRAIN = allcnn_step.N_TRAIN
LEARNING_RATE = 0.01
METHODS = ('information', 'none')  # The PyTorch model implements these two.


# --- ours -----------------------------------------------------------------------------------------------------------


class _Ours:
  """`train.train_step` of our All-CNN-32 as benchmarks/allcnn_step.py builds it: one device, one step per call (or
  the trainer's run), the CPU speed-ups on or off."""
  framework = 'ours'
  torch_compiled = False

  def __init__(self, method: str, filter_percentage: float, dtype: str, images, labels, num_steps: int,
               fuse_alpha: bool = False, cpu_speedups: bool = True, trainer_run: bool = False):
    import jax  # pylint: disable=g-import-not-at-top

    config = allcnn_step.cifar_config(method, filter_percentage, dtype)
    config.model.fuse_alpha = fuse_alpha
    config.optim.learning_rate = LEARNING_RATE
    self.config = config
    # 'step': one device, as the PyTorch side (the default mesh would spread ours over every GPU of the machine).
    devices = jax.devices() if trainer_run else jax.devices()[:1]
    # Keys drawn up front, so the timed loop dispatches the step and nothing else.
    self._keys = list(jax.random.split(jax.random.PRNGKey(0), num_steps))
    self._i = 0
    built = allcnn_step.build(config, images, labels, self._keys[0], devices=devices, cpu_speedups=cpu_speedups,
                              steps_per_call=FLAGS.steps_per_call if trainer_run else 1)
    self.model, self.state, self.batch, self._step, self.compile_s = built[:5]
    # The trainer's run: `built.steps_per_call` is 1 where the trainer drives its steps from the host.
    self.steps_per_call = built.steps_per_call
    run = ''
    if trainer_run:
      run = (f', {len(devices)} device{"s" * (len(devices) > 1)} × {self.steps_per_call} '
             f'step{"s" * (self.steps_per_call > 1)}/call{"" if self.steps_per_call > 1 else " (host-driven)"}')
    speedups = f', speed-ups {"on" if cpu_speedups else "off"}'
    self.name = f'ours jax.jit{" fused α" if fuse_alpha else ""}{speedups}{run} {dtype}'
    self.cpu_speedups = cpu_speedups
    self.single_step_call = len(devices) == 1 and self.steps_per_call == 1  # The 'step' variant's setting.
    self.group = dtype
    self.num_params = sum(x.size for x in jax.tree.leaves(self.state.params))
    # FLOPs per step from the one-device step only: a sharded or scanned step's cost analysis is per device / body.
    self.flops = None if trainer_run else allcnn_step.step_flops(self._step) or None
    self._block = jax.block_until_ready

  def run(self, steps: int) -> tuple[float, tuple[float, float, float]]:
    """Seconds for `steps` steps, and (loss, ce, beta_lz) of the last one (computed before its update).

    Runs whole calls: `steps` rounded up to a multiple of steps_per_call, the seconds scaled back to `steps`.
    """
    calls = -(-steps // self.steps_per_call)
    start = time.perf_counter()
    for _ in range(calls):
      self.state, metrics = self._step(self.state, self.batch, self._keys[self._i % len(self._keys)])
      self._i += 1
    self._block((self.state, metrics))
    seconds = (time.perf_counter() - start) * steps / (calls * self.steps_per_call)
    return seconds, tuple(float(metrics[k]) for k in ('loss', 'ce', 'beta_lz'))


# --- PyTorch --------------------------------------------------------------------------------------------------------


@functools.cache
def _torch_classes():
  """The PyTorch All-CNN-32 and its training loss, defined once torch is imported (it is an optional extra)."""
  import torch  # pylint: disable=g-import-not-at-top
  from infodrop_jax import kl as kl_lib  # pylint: disable=g-import-not-at-top
  from infodrop_jax import models  # pylint: disable=g-import-not-at-top
  nn, F = torch.nn, torch.nn.functional
  bn_epsilon = models.ORIGINAL_BN['epsilon']
  floor = kl_lib.ALPHA_FLOOR

  def batch_norm(features, spec):
    # Ours has a learned shift but no scale γ (the original's TF BatchNorm). An affine BatchNorm2d with its weight
    # frozen at 1 keeps PyTorch's fused kernel; only the shift is trainable, so the parameter counts agree. Flax's
    # running average decays by `momentum`, PyTorch's by 1 − momentum.
    bn = nn.BatchNorm2d(features, eps=bn_epsilon, momentum=1.0 - spec.bn_momentum)
    bn.weight.requires_grad_(False)
    return bn

  class ConvBNReLU(nn.Module):

    def __init__(self, cin, cout, kernel, stride, padding, spec):
      super().__init__()
      self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
      self.bn = batch_norm(cout, spec)

    def forward(self, x):
      return F.relu(self.bn(self.conv(x)))

  class InformationPool(nn.Module):
    """Stride-2 3x3 conv + BN + ReLU; with Information Dropout, z = f·exp(α ε) and α from a second conv of x."""

    def __init__(self, cin, cout, spec):
      super().__init__()
      # padding=1 as a PyTorch user writes it: the same shapes and FLOPs as Flax's 'SAME' (which pads a stride-2
      # 3x3 conv by (0, 1)) with windows shifted by a pixel, and no extra pad copy to slow PyTorch down.
      self.signal = ConvBNReLU(cin, cout, 3, 2, 1, spec)
      self.alpha = nn.Conv2d(cin, cout, 3, stride=2, padding=1) if spec.dropout == 'information' else None
      self.max_alpha = spec.max_alpha

    def forward(self, x):
      f = self.signal(x)
      if self.alpha is None:
        return f, None
      # Noise and KL in float32 whatever the autocast dtype, as ours.
      alpha = floor + self.max_alpha * torch.sigmoid(self.alpha(x).float())
      z = (f.float() * torch.exp(alpha * torch.randn_like(alpha))).to(f.dtype)
      # kl.log_uniform_kl: every unit counts, ReLU zeros included; Σ units, mean over the batch (kl.total_kl).
      kl = -torch.log(alpha / (self.max_alpha + floor))
      return z, kl.flatten(1).sum(1).mean()

  class AllCNN32(nn.Module):
    """Our `models.AllCNN` in PyTorch, NCHW; every width and rate is read from `spec`, our Flax module."""

    def __init__(self, spec):
      super().__init__()
      self.input_dropout_rate = spec.input_dropout_rate
      cin, blocks, pools = 3, [], []
      for features in spec.block_features:
        convs = []
        for _ in range(spec.convs_per_block):
          convs.append(ConvBNReLU(cin, features, 3, 1, 1, spec))
          cin = features
        blocks.append(nn.Sequential(*convs))
        pools.append(InformationPool(cin, features, spec))
      self.blocks, self.pools = nn.ModuleList(blocks), nn.ModuleList(pools)
      top = spec.top_features
      self.top = nn.Sequential(ConvBNReLU(cin, top, 3, 1, 1, spec), ConvBNReLU(top, top, 1, 1, 0, spec),
                               ConvBNReLU(top, spec.num_classes, 1, 1, 0, spec))
      self.logits = nn.Linear(spec.num_classes, spec.num_classes)

    def forward(self, images):
      """(logits float32, Σ_layers mean_batch Σ_units KL)."""
      x = F.dropout(images, self.input_dropout_rate, self.training)
      kls = []
      for convs, pool in zip(self.blocks, self.pools):
        x, kl = pool(convs(x))
        if kl is not None:
          kls.append(kl)
      logits = self.logits(self.top(x).mean((2, 3))).float()
      return logits, sum(kls) if kls else logits.new_zeros(())

  class TrainLoss(nn.Module):
    """CE + beta·Lz + weight_decay·Σ||w||²/2 over the trainable parameters, as `train.train_step`'s loss."""

    def __init__(self, net, beta, n_train, weight_decay):
      super().__init__()
      self.net, self.beta, self.n_train, self.weight_decay = net, beta, n_train, weight_decay

    def forward(self, images, labels):
      logits, kl = self.net(images)
      ce = F.cross_entropy(logits, labels)
      beta_lz = self.beta * kl / self.n_train
      l2 = sum(p.float().square().sum() for p in self.net.parameters() if p.requires_grad) / 2
      return ce + beta_lz + self.weight_decay * l2, ce, beta_lz

  return AllCNN32, TrainLoss


class _Torch:
  """One SGD step of the PyTorch model: eager or torch.compile'd (model + loss), float32 or bf16 autocast."""
  framework = 'torch'

  def __init__(self, spec, config, images, labels, device: str, *, compiled: bool, amp: bool):
    import numpy as np  # pylint: disable=g-import-not-at-top
    import torch  # pylint: disable=g-import-not-at-top
    all_cnn_32, train_loss = _torch_classes()
    self.torch_compiled = compiled
    self.group = 'bfloat16' if amp else 'float32'
    self.name = _torch_name(compiled, amp)
    self.compile_s = None
    self._cuda = device == 'cuda'
    torch.manual_seed(0)
    module = train_loss(all_cnn_32(spec), float(config.loss.beta), N_TRAIN, float(config.loss.weight_decay))
    module = module.to(device)
    memory_format = torch.channels_last if amp else torch.contiguous_format
    module = module.to(memory_format=memory_format)
    module.train()
    params = [p for p in module.parameters() if p.requires_grad]
    self.num_params = sum(p.numel() for p in params)
    self._opt = torch.optim.SGD(params, lr=LEARNING_RATE, momentum=float(config.optim.momentum), nesterov=True)
    self._images = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))).to(device).contiguous(
        memory_format=memory_format)
    self._labels = torch.from_numpy(labels.astype(np.int64)).to(device)
    self._loss = torch.compile(module, mode=FLAGS.torch_compile_mode) if compiled else module
    self._autocast = (functools.partial(torch.autocast, device_type='cuda', dtype=torch.bfloat16) if amp
                      else contextlib.nullcontext)
    self._torch = torch

  def _sync(self):
    if self._cuda:
      self._torch.cuda.synchronize()

  def run(self, steps: int) -> tuple[float, tuple[float, float, float]]:
    """Seconds for `steps` steps, and (loss, ce, beta_lz) of the last one (computed before its update)."""
    self._sync()
    start = time.perf_counter()
    for _ in range(steps):
      with self._autocast():
        loss, ce, beta_lz = self._loss(self._images, self._labels)
      self._opt.zero_grad(set_to_none=True)
      loss.backward()
      self._opt.step()
    self._sync()
    seconds = time.perf_counter() - start
    return seconds, tuple(float(t.detach()) for t in (loss, ce, beta_lz))


# --- one (filters, method) cell -------------------------------------------------------------------------------------


def _short(error: BaseException) -> str:
  text = str(error).strip().splitlines()
  return f'{type(error).__name__}: {text[0] if text else ""}'[:160]


def _log(message: str) -> None:
  print(message, file=sys.stderr, flush=True)


def _torch_name(compiled: bool, amp: bool) -> str:
  return ('torch.compile' if compiled else 'torch eager') + (' AMP bf16 + channels_last' if amp else ' float32')


def _true(flag: str) -> bool:
  return flag.lower() in ('true', '1', 'yes')


def _run_cell(method: str, filter_percentage: float, images, labels, device: str, bfloat16: bool,
              torch_compile: bool, matmul_rates: dict, speedup_values: list[bool]) -> dict:
  """Builds, warms up, checks and times every variant for one (filters, method); returns the cell's numbers."""
  label = f'{filter_percentage:.0%} {method}'
  num_steps = FLAGS.warmup + FLAGS.rounds * FLAGS.steps
  groups = ['float32'] + (['bfloat16'] if bfloat16 else [])
  entries = []  # (name, precision, framework, variant or None), in table order.
  failed = {}  # name -> reason: torch.compile may fail to build, compile or run; that is reported, not fatal.
  ours = None
  for group in groups:
    fuse_values = sorted({_true(flag) for flag in FLAGS.fuse_alpha}) \
        if method == 'information' else [False]
    for fuse_alpha, speedups, trainer_run in itertools.product(
        fuse_values, speedup_values, sorted({run == 'trainer' for run in FLAGS.ours_runs})):
      _log(f'[{label}] compiling ours {group}{" fused" if fuse_alpha else ""}, speed-ups '
           f'{"on" if speedups else "off"}{", trainer run" if trainer_run else ""}')
      variant = _Ours(method, filter_percentage, group, images, labels, num_steps, fuse_alpha=fuse_alpha,
                      cpu_speedups=speedups, trainer_run=trainer_run)
      if trainer_run and 'step' in FLAGS.ours_runs and variant.single_step_call:
        _log(f'[{label}] {variant.name}: the trainer drives this step from the host on one device, as the '
             "one-step variant: not timed twice")
        continue
      ours = ours or variant
      entries.append((variant.name, group, 'ours', variant))
    for compiled in [False] + ([True] if torch_compile else []):
      name = _torch_name(compiled, group == 'bfloat16')
      try:
        variant = _Torch(ours.model, ours.config, images, labels, device, compiled=compiled, amp=group == 'bfloat16')
      except Exception as e:  # pylint: disable=broad-except
        if not compiled:
          raise
        variant, failed[name] = None, _short(e)
      entries.append((name, group, 'torch', variant))
  variants = [v for *_, v in entries if v is not None]

  torch_params = next(v.num_params for v in variants if v.framework == 'torch')
  print(f'{label}: trainable parameters ours {ours.num_params:,}, torch {torch_params:,}', flush=True)
  if ours.num_params != torch_params:
    raise AssertionError(f'{label}: the PyTorch model has {torch_params:,} trainable parameters, ours '
                         f'{ours.num_params:,}: the architectures differ.')

  first = {}
  for v in variants:
    _log(f'[{label}] warming up {v.name} ({FLAGS.warmup} steps)')
    try:
      seconds, first[v.name] = v.run(1)
      if v.torch_compiled:  # torch.compile compiles on the first call: its compile time is that step's.
        v.compile_s = seconds
      if FLAGS.warmup > 1:
        v.run(FLAGS.warmup - 1)
    except Exception as e:  # pylint: disable=broad-except
      if not v.torch_compiled:
        raise
      failed[v.name] = _short(e)
      first.pop(v.name, None)
  variants = [v for v in variants if v.name not in failed]
  if FLAGS.check:
    _check(label, variants, first)

  rates = {v.name: [] for v in variants}
  for r in range(FLAGS.rounds):
    _log(f'[{label}] round {r + 1}/{FLAGS.rounds}')
    k = r % len(variants)  # Each round starts one variant later: no variant always runs right after another.
    for v in variants[k:] + variants[:k]:
      if v.name in failed:
        continue
      try:
        seconds, _ = v.run(FLAGS.steps)
      except Exception as e:  # pylint: disable=broad-except
        if not v.torch_compiled:
          raise
        failed[v.name] = _short(e)
        continue
      rates[v.name].append(FLAGS.steps * FLAGS.batch / seconds)

  rows = []
  for name, group, framework, v in entries:
    done = rates.get(name) if name not in failed else None
    rows.append(dict(variant=name, framework=framework, precision=group,
                     compile_s=v.compile_s if v is not None else None, failed=failed.get(name),
                     images_per_s_rounds=rates.get(name, []),
                     images_per_s_median=statistics.median(done) if done else None,
                     images_per_s_min=min(done) if done else None, images_per_s_max=max(done) if done else None,
                     first_step=dict(zip(('loss', 'ce', 'beta_lz'), first[name])) if name in first else None))
  for row, (*_, v) in zip(rows, entries):  # Each one-device step's own count, for the record.
    row['flops_per_step'] = getattr(v, 'flops', None)
  flops = next((v.flops for *_, v in entries if v is not None and getattr(v, 'flops', None)), None)
  if flops is None and FLAGS.matmul_size > 0:  # Only trainer runs: count a one-device step's FLOPs once.
    import jax  # pylint: disable=g-import-not-at-top
    flops = allcnn_step.one_device_flops(ours.config, images, labels, jax.random.PRNGKey(0),
                                         cpu_speedups=ours.cpu_speedups) or None
  for row in rows:
    speed, rate = row['images_per_s_median'], matmul_rates.get(row['precision'])
    row['gflop_per_s'] = flops * speed / FLAGS.batch / 1e9 if flops and speed else None
    row['share_of_matmul_rate'] = row['gflop_per_s'] / rate if row['gflop_per_s'] and rate else None
    for ref, key in (('torch eager', 'ratio_vs_torch_eager'), ('torch.compile', 'ratio_vs_torch_compile')):
      base = next((r['images_per_s_median'] for r in rows
                   if r['precision'] == row['precision'] and r['variant'].startswith(ref + ' ')), None)
      row[key] = row['images_per_s_median'] / base if row['images_per_s_median'] and base else None
  return dict(filter_percentage=filter_percentage, method=method, params_ours=ours.num_params,
              params_torch=torch_params, flops_per_step=flops, variants=rows)


def _check(label: str, variants: list, first: dict) -> None:
  """First-step losses: finite, CE near log 10 (untrained 10-way logits), totals within 2x of ours."""
  problems = []
  for v in variants:
    loss, ce, beta_lz = first[v.name]
    print(f'  check {label} {v.name}: loss {loss:.3f} = CE {ce:.3f} + beta·Lz {beta_lz:.3f} + wd·L2 '
          f'{loss - ce - beta_lz:.3f}', flush=True)
    if not all(math.isfinite(x) for x in (loss, ce, beta_lz)):
      problems.append(f'{v.name}: a non-finite loss')
    elif abs(ce - math.log(10)) > 0.5:
      problems.append(f'{v.name}: CE {ce:.3f} is not within 0.5 of log 10 = {math.log(10):.3f}')
  for v in variants:
    ours = next((o for o in variants if o.framework == 'ours' and o.group == v.group), None)
    if v.framework == 'torch' and ours is not None:
      ratio = first[v.name][0] / first[ours.name][0]
      if not 0.5 <= ratio <= 2.0:
        problems.append(f'{v.name}: first loss {first[v.name][0]:.3f} vs ours {first[ours.name][0]:.3f}')
  if problems:
    raise AssertionError(f'{label}: first-step loss check failed: ' + '; '.join(problems))


# --- report ---------------------------------------------------------------------------------------------------------


def _transparent_huge_pages() -> str:
  """The kernel's THP mode ('[madvise]' is what GLIBC_TUNABLES=glibc.malloc.hugetlb=1 needs), or ''."""
  with contextlib.suppress(OSError):
    with open('/sys/kernel/mm/transparent_hugepage/enabled') as f:
      return next((word.strip('[]') for word in f.read().split() if word.startswith('[')), '')
  return ''


def _machine(torch, jax, device: str) -> dict:
  import flax  # pylint: disable=g-import-not-at-top
  import jaxlib  # pylint: disable=g-import-not-at-top
  from infodrop_jax.cpu import xla as cpu_xla  # pylint: disable=g-import-not-at-top
  # The XLA options of the 'speed-ups on' variants (none off the CPU, as the trainer).
  speedups_options = str(cpu_xla.compiler_options()) if device == 'cpu' else 'none (not a CPU)'
  cpu_model = ''
  with contextlib.suppress(OSError):
    with open('/proc/cpuinfo') as f:
      cpu_model = next((line.split(':', 1)[1].strip() for line in f if line.startswith('model name')), '')
  info = dict(platform=FLAGS.platform, jax_device=str(jax.devices()[0]), device_kind=jax.devices()[0].device_kind,
              cpu_model=cpu_model or platform.processor(), cpu_count=os.cpu_count(),
              cpu_affinity=len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else None,
              python=platform.python_version(), jax=jax.__version__, jaxlib=jaxlib.__version__,
              flax=flax.__version__, torch=torch.__version__, torch_num_threads=torch.get_num_threads(),
              torch_num_interop_threads=torch.get_num_interop_threads(),
              XLA_FLAGS=os.environ.get('XLA_FLAGS', ''), speedups_compiler_options=speedups_options,
              OMP_NUM_THREADS=os.environ.get('OMP_NUM_THREADS', ''),
              GLIBC_TUNABLES=os.environ.get('GLIBC_TUNABLES', ''), transparent_hugepage=_transparent_huge_pages(),
              jax_devices=len(jax.devices()),
              date=datetime.datetime.now().astimezone().isoformat(timespec='seconds'))
  if device == 'cuda':
    info.update(torch_device=torch.cuda.get_device_name(0), cudnn=torch.backends.cudnn.version(),
                torch_cudnn_allow_tf32=torch.backends.cudnn.allow_tf32,
                torch_matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32,
                torch_cudnn_benchmark=torch.backends.cudnn.benchmark,
                jax_default_matmul_precision=str(jax.config.jax_default_matmul_precision),
                XLA_PYTHON_CLIENT_MEM_FRACTION=os.environ.get('XLA_PYTHON_CLIENT_MEM_FRACTION', ''))
  return info


def _matmul_rates(torch, jax, device: str, bfloat16: bool) -> dict:
  """{precision: GFLOP/s}: the better of torch.mm and jnp.dot (one device) on square --matmul_size matrices."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  n = FLAGS.matmul_size
  if n <= 0:
    return {}
  rates = {}
  for precision in ['float32'] + (['bfloat16'] if bfloat16 else []):
    a = torch.randn(n, n, device=device, dtype=getattr(torch, precision))
    x = jax.device_put(jnp.ones((n, n), getattr(jnp, precision)), jax.devices()[0])
    dot = jax.jit(jnp.dot).lower(x, x).compile()  # XLA's own defaults: a plain product, no options.

    def torch_mm():
      out = a @ a
      if device == 'cuda':
        torch.cuda.synchronize()
      return out

    best = {}
    for name, fn in (('torch.mm', torch_mm), ('jnp.dot', lambda: dot(x, x).block_until_ready())):
      fn()
      seconds = []
      for _ in range(5):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
      best[name] = 2 * n ** 3 / min(seconds) / 1e9
    rates[precision] = max(best.values())
    print(f'matmul rate {precision} ({n}²): ' + ', '.join(f'{k} {v:,.0f}' for k, v in best.items()) + ' GFLOP/s',
          flush=True)
  return rates


def _table(cells: list) -> str:
  lines = ['| filters | method | framework/variant | compile s | images/s median [min–max] | ratio vs torch eager | '
           'ratio vs torch.compile | GFLOP/s (share of matmul rate) |', '|---|---|---|---|---|---|---|---|']
  fmt = lambda x, spec: '—' if x is None else format(x, spec)
  for cell in cells:
    for row in cell['variants']:
      if row['failed']:
        speed = f'failed: {row["failed"]}'.replace('|', '/')
      else:
        speed = (f'{row["images_per_s_median"]:,.0f} [{row["images_per_s_min"]:,.0f}–'
                 f'{row["images_per_s_max"]:,.0f}]')
      share = '' if row['share_of_matmul_rate'] is None else f' ({row["share_of_matmul_rate"]:.0%})'
      lines.append(f'| {cell["filter_percentage"]:.0%} | {cell["method"]} | {row["variant"]} | '
                   f'{fmt(row["compile_s"], ".1f")} | {speed} | {fmt(row["ratio_vs_torch_eager"], ".2f")} | '
                   f'{fmt(row["ratio_vs_torch_compile"], ".2f")} | {fmt(row["gflop_per_s"], ",.0f")}{share} |')
  return '\n'.join(lines)


def main(argv):
  del argv
  for method in FLAGS.methods:
    if method not in METHODS:
      raise app.UsageError(f'--methods: {method!r} is not one of {METHODS} (the PyTorch model has only these).')
  gpu = FLAGS.platform == 'gpu'
  speedups = FLAGS.cpu_speedups if FLAGS.cpu_speedups is not None else ['off'] if gpu else ['on', 'off']
  for value in speedups:
    if value not in ('on', 'off'):
      raise app.UsageError(f"--cpu_speedups: {value!r} is not 'on' or 'off'.")
  if not speedups:
    raise app.UsageError("--cpu_speedups: give 'on' and/or 'off'.")
  speedup_values = sorted({value == 'on' for value in speedups}, reverse=True)  # On first: the FLOPs are its.
  for run in FLAGS.ours_runs:
    if run not in ('step', 'trainer'):
      raise app.UsageError(f"--ours_runs: {run!r} is not 'step' or 'trainer'.")
  for name in ('batch', 'steps', 'rounds', 'warmup', 'steps_per_call'):
    if FLAGS[name].value < 1:
      raise app.UsageError(f'--{name} must be at least 1.')
  torch_compile = gpu if FLAGS.torch_compile is None else FLAGS.torch_compile
  bfloat16 = gpu if FLAGS.bfloat16 is None else FLAGS.bfloat16
  if bfloat16 and not gpu:
    raise app.UsageError('--bfloat16 is for --platform=gpu only.')
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    print(_TORCH_MISSING, file=sys.stderr)
    sys.exit(2)
  device = 'cuda' if gpu else 'cpu'
  if FLAGS.torch_threads is not None:
    torch.set_num_threads(FLAGS.torch_threads)
  if gpu and not torch.cuda.is_available():
    raise app.UsageError(f'torch {torch.__version__} sees no CUDA device: install the CUDA build of the same version.')
  if gpu:
    torch.backends.cudnn.benchmark = FLAGS.cudnn_benchmark
    # Both frameworks share the GPU; JAX's default 75 % preallocation would leave PyTorch little.
    os.environ.setdefault('XLA_PYTHON_CLIENT_MEM_FRACTION', '0.5')
  # JAX_PLATFORMS=gpu also asks for ROCm, which fails on CUDA-only installs: name the CUDA backend.
  os.environ.setdefault('JAX_PLATFORMS', 'cuda' if gpu else 'cpu')
  if not gpu and 'trainer' in FLAGS.ours_runs:  # Before JAX starts its backends, which read XLA_FLAGS once.
    try:
      cpu_process.use_host_devices(cpu_process.host_devices(None, FLAGS.host_devices))
    except ValueError as e:
      raise app.UsageError(str(e)) from e
  import jax  # pylint: disable=g-import-not-at-top
  if 'trainer' in FLAGS.ours_runs and FLAGS.batch % len(jax.devices()):
    raise app.UsageError(f'--batch {FLAGS.batch} does not split over the {len(jax.devices())} devices.')

  machine = _machine(torch, jax, device)
  print('machine: ' + '; '.join(f'{k} {v}' for k, v in machine.items()))
  print(f'batch {FLAGS.batch}; {FLAGS.rounds} rounds × {FLAGS.steps} steps per variant after {FLAGS.warmup} warm-up '
        f'steps; torch.compile {"on, mode " + FLAGS.torch_compile_mode if torch_compile else "off"}; '
        f'bfloat16 {"on" if bfloat16 else "off"}; ours with CPU speed-ups {" and ".join(speedups)}; '
        f'GLIBC_TUNABLES={os.environ.get("GLIBC_TUNABLES", "")!r}\n', flush=True)
  matmul_rates = _matmul_rates(torch, jax, device, bfloat16)
  images, labels = allcnn_step.synthetic_batch(FLAGS.batch)
  cells = []
  for fp in FLAGS.filter_percentages:
    for method in FLAGS.methods:
      cells.append(_run_cell(method, float(fp), images, labels, device, bfloat16, torch_compile, matmul_rates,
                             speedup_values))
      if gpu:
        torch.cuda.empty_cache()
  print('\n' + _table(cells))
  print('\ncompile s: ours, lower + compile; torch.compile, its first step (compilation included). Ratios: medians '
        'against torch eager / torch.compile of the same precision in this run. GFLOP/s: the '
        "step's FLOPs (XLA cost analysis) × steps/s; share of the better of torch.mm / jnp.dot measured above.")
  if FLAGS.json:
    with open(FLAGS.json, 'w') as f:
      json.dump(dict(machine=machine, settings=dict(
          batch=FLAGS.batch, steps=FLAGS.steps, rounds=FLAGS.rounds, warmup=FLAGS.warmup,
          torch_compile=torch_compile, torch_compile_mode=FLAGS.torch_compile_mode, bfloat16=bfloat16,
          cpu_speedups=speedups, ours_runs=FLAGS.ours_runs, steps_per_call=FLAGS.steps_per_call,
          host_devices=FLAGS.host_devices, fuse_alpha=FLAGS.fuse_alpha,
          matmul_size=FLAGS.matmul_size, matmul_gflop_per_s=matmul_rates,
          learning_rate=LEARNING_RATE, n_train=N_TRAIN), cells=cells), f, indent=2)
    print(f'wrote {FLAGS.json}')


if __name__ == '__main__':
  app.run(main)
