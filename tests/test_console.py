"""What a run prints (issue 26, items 12 and 13): once which data it read and where it writes; speed and ETA that do
not count the compilation; an evaluation that does not read as a training; no orbax notice that a read-only open is
read-only; a smoke run that says it is one; and the next command at the end."""
import io
import logging

import pytest

import train_helpers
from infodrop_jax import checkpoint as checkpoint_lib
from infodrop_jax import metrics
from infodrop_jax import train


class _Log(io.StringIO):

  def isatty(self):
    return False


def test_speed_and_eta_count_from_a_restart_not_from_the_compilation(monkeypatch):
  clock = [0.0]
  monkeypatch.setattr(metrics.time, 'perf_counter', lambda: clock[0])
  log = _Log()
  bar = metrics.ProgressBar(1000, 10, stream=log, log_interval_s=0.0)
  bar.start(0)
  clock[0] = 60.0  # the first chunk of 10 steps compiled for a minute
  bar.start(10)  # what the trainer does after it
  bar.update(10, 0, 1.0)  # nothing timed yet: no line with a speed of 0 and no ETA
  clock[0] = 61.0
  bar.update(20, 0, 1.0)  # 10 steps in 1 s: 980 steps left take 98 s
  (line,) = log.getvalue().splitlines()
  assert line == 'step 20/1000 epoch 0 | 100 img/s | ETA 00:01:38 | loss 1.0000'


@pytest.mark.parametrize('seconds,text', [(0.0213, '0.021 s'), (0.4, '0.4 s'), (3.21, '3.2 s'), (42.4, '42 s'),
                                          (600, '10.0 min'), (7200, '2.0 h')])
def test_durations_are_never_about_0_s(seconds, text):
  assert train._duration(seconds) == text  # pylint: disable=protected-access


def _train(tmp_path, capsys, smoke=False):
  config = train_helpers.tiny_config()
  config.logging.smoke = smoke  # tiny_config is mnist_fc's :smoke
  train.train_and_evaluate(config, str(tmp_path), model=train_helpers.TinyNoisyNet(),
                           splits=train_helpers.tiny_splits())
  return config, capsys.readouterr().out.splitlines()


def test_a_run_says_what_data_it_read_where_it_writes_and_what_to_run_next(tmp_path, capsys):
  config, lines = _train(tmp_path, capsys)
  assert lines[0] == (f'data: generated, 96 train / 40 test examples. This run writes {tmp_path} (config.json, '
                      'checkpoints/, metrics.jsonl, summary.json).')
  assert lines[-1] == (f'Next: python launch.py --workdir={tmp_path} --mode=analyze   (figures and numbers into '
                       f'{tmp_path}/analysis/)')
  assert lines[-2].startswith('wall time: ') and not any('smoke' in line for line in lines)
  assert not any(' 0 img/s' in line or 'about 0 s' in line for line in lines)

  train.evaluate_checkpoint(config, str(tmp_path), model=train_helpers.TinyNoisyNet(),
                            splits=train_helpers.tiny_splits())
  out = capsys.readouterr().out.splitlines()
  assert out[-1].startswith(f'evaluated the checkpoint at step {config.train.num_epochs * 96 // 16} in ')
  assert not any(line.startswith('wall time') for line in out)  # it trained nothing


def test_a_smoke_run_says_so_at_the_start_and_the_end(tmp_path, capsys):
  _, lines = _train(tmp_path, capsys, smoke=True)
  note = ('a smoke run (tiny data, model and epochs): its numbers check that the code runs; they are no result of '
          "the paper's. The config without :smoke trains the recipe.")
  assert lines[1] == f'This is {note}' and lines[-2] == f'(This was {note})'


def test_smoke_variants_mark_themselves_and_the_recipes_do_not():
  for name in ('mnist_fc', 'cifar_info', 'cluttered_info', 'mnist_ip', 'vae_mnist', 'occluded_cifar_info',
               'cifar_softplus', 'cifar_binary', 'vae_fmnist'):
    module = train_helpers.load_module(f'configs/{name}.py')
    assert train.is_smoke(module.get_config('smoke')) and not train.is_smoke(module.get_config('')), name


def test_opening_checkpoints_read_only_logs_no_notice_of_it(tmp_path, caplog):
  writer = checkpoint_lib.Checkpointer(str(tmp_path), max_to_keep=2)
  writer.close()
  with caplog.at_level(logging.WARNING):
    checkpoint_lib.Checkpointer(str(tmp_path), max_to_keep=2, read_only=True).close()
    logging.getLogger('absl').warning('Given directory is read only, but this one is not orbax\'s notice')
  messages = [r.getMessage() for r in caplog.records]
  assert messages == ['Given directory is read only, but this one is not orbax\'s notice'], messages


def test_the_trainer_restarts_the_progress_clock_after_the_compiling_chunk(tmp_path, monkeypatch):
  starts = []
  original = metrics.ProgressBar.start

  def start(self, step):
    starts.append(step)
    original(self, step)

  monkeypatch.setattr(metrics.ProgressBar, 'start', start)
  config = train_helpers.tiny_config()  # chunks of at most 4 steps, ending at every log step (2)
  train.train_and_evaluate(config, str(tmp_path), model=train_helpers.TinyNoisyNet(),
                           splits=train_helpers.tiny_splits())
  # The first ETA counts from the end of the compiling first chunk (steps 0-2), not from its start.
  assert starts == [0, 2]
