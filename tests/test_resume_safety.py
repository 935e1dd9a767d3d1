"""Nothing lost, nothing confusing on restarts: interrupted evaluations are redone, a changed config is refused, a
finished run is left alone, a failed start leaves no empty workdir, and the first step reports its compile time."""
import json
import os
import shutil
import types

import pytest

import train_helpers
from infodrop_jax import config_diff
from infodrop_jax import metrics
from infodrop_jax import train


def _train(workdir, config=None, **kwargs):
  config = config or train_helpers.tiny_config()
  return train.train_and_evaluate(config, str(workdir), model=train_helpers.TinyNoisyNet(),
                                  splits=train_helpers.tiny_splits(), **kwargs)


def _records(workdir):
  return [json.loads(line) for line in open(os.path.join(workdir, 'metrics.jsonl'), encoding='utf-8')]


class _KilledOnce:
  """A hook that raises at `step` the first time: the run dies there, after the epoch's checkpoint."""
  name = 'kill'

  def __init__(self, step):
    self.step, self.fired = step, False

  def __call__(self, run, state, step):
    if step == self.step and not self.fired:
      self.fired = True
      raise RuntimeError('killed')
    return None


@pytest.fixture(scope='module')
def resumed(tmp_path_factory):
  """Killed during the hooks of epoch 1 (step 6, before its evaluation), then resumed to the end (step 12)."""
  workdir = tmp_path_factory.mktemp('killed')
  with pytest.raises(RuntimeError, match='killed'):
    _train(workdir, hooks=[_KilledOnce(6), train.evaluation_hook(1)])
  before = _records(workdir)
  summary = _train(workdir)
  return workdir, before, summary


def test_resume_redoes_an_evaluation_the_kill_interrupted(resumed):
  workdir, before, summary = resumed
  assert not any('test/error_d' in r for r in before if r['step'] == 6)  # Killed before it was logged.
  records = _records(workdir)
  assert [r['step'] for r in records if 'test/error_d' in r] == [6, 12]  # Redone once, then the final one.
  assert [r['step'] for r in records if 'train/loss' in r] == [2, 4, 6, 8, 10, 12]
  assert summary['steps'] == 12


def test_resume_does_not_repeat_an_evaluation_that_completed(tmp_path):
  """Killed after the evaluation of step 6 was logged: the resumed run must not run (and log) it again."""
  (tmp_path / 'metrics.jsonl').write_text('{"step": 6, "train/loss": 1.0}\n{"step": 6, "test/error_d": 0.5}\n'
                                          '{"step": 12, "train/loss": 0.5}\n')
  run = types.SimpleNamespace(steps_per_epoch=6, total_steps=18,
                              writer=metrics.MetricWriter(str(tmp_path), tensorboard=False, resume_step=12))
  hook = train.evaluation_hook(1)
  assert hook.recorded(run, 6)  # Logged before the kill.
  assert not hook.recorded(run, 12)  # Killed before it was logged: redo.
  assert hook.recorded(run, 3) and hook.recorded(run, 18)  # Nothing to do there (the final one is the summary's).
  run.writer.write(12, {'test/error_d': 0.4})
  assert hook.recorded(run, 12)
  run.writer.close()


def test_first_step_reports_compile_time_and_cpu_epoch_estimate(tmp_path, capsys):
  _train(tmp_path, config=train_helpers.tiny_config(steps_per_call=2, num_epochs=1))
  out = capsys.readouterr().out
  assert 'compiling the train step…' in out and 'compiled the train step' in out
  assert out.index('compiling the train step…') < out.index('compiled the train step')
  assert 'per epoch on this CPU' in out


def test_a_finished_run_is_left_as_it_is(resumed, capsys):
  workdir, _, summary = resumed
  files = {name: (workdir / name).read_bytes() for name in ('summary.json', 'metrics.jsonl', 'config.json')}
  again = _train(workdir)
  assert 'already finished' in capsys.readouterr().out
  assert again == json.loads(files['summary.json'])
  assert again['wall_time_s'] == pytest.approx(summary['wall_time_s'])
  for name, content in files.items():
    assert (workdir / name).read_bytes() == content, name


def test_resume_with_a_changed_config_is_refused_naming_the_fields(resumed):
  workdir, _, _ = resumed
  config = train_helpers.tiny_config()
  config.loss.beta = 0.5
  config.optim.learning_rate = 0.1
  config.train.num_epochs = 3
  saved = (workdir / 'config.json').read_bytes()
  with pytest.raises(ValueError, match=r'2 field\(s\): loss.beta: now 0.5 vs before 1.0; optim.learning_rate: now '
                     r'0.1 vs before 0.05.*--allow_config_change'):
    _train(workdir, config=config)
  assert (workdir / 'config.json').read_bytes() == saved


def test_allowed_config_change_continues_and_keeps_the_old_config(resumed, tmp_path):
  workdir = tmp_path / 'w'
  shutil.copytree(resumed[0], workdir)
  # Free fields alone never need the flag; num_epochs may be raised to train longer.
  config = train_helpers.tiny_config(num_epochs=3, keep_checkpoints=5)
  config.logging.tensorboard = False
  config.eval.every_epochs = 2
  config.data.verify_counts = False  # (The splits are given: a change that compiles nothing new.)
  with pytest.raises(ValueError, match=r'1 field\(s\): data.verify_counts'):
    _train(workdir, config=config)
  summary = _train(workdir, config=config, allow_config_change=True)
  assert summary['steps'] == 18
  assert json.loads((workdir / 'config.json').read_text())['data']['verify_counts'] is False
  assert json.loads((workdir / 'config.before_step_12.json').read_text())['data']['verify_counts'] is True
  # Fewer epochs than the checkpoint already holds: refused, not "evaluated past the end".
  config.train.num_epochs = 1
  with pytest.raises(ValueError, match=r'already has a checkpoint at step 18'):
    _train(workdir, config=config)


def test_config_differences_are_json_normalised_and_skip_free_fields():
  ours, theirs = train_helpers.tiny_config(), json.loads(train_helpers.tiny_config().to_json_best_effort())
  assert isinstance(ours.optim.lr_drop_epochs, tuple) and isinstance(theirs['optim']['lr_drop_epochs'], list)
  assert config_diff.differences(ours, theirs) == []
  ours.train.num_epochs, ours.logging.progress_bar, ours.eval.batch_size = 50, True, 8
  ours.distributed.enabled, ours.train.parallel = True, 'pmap'
  assert config_diff.differences(ours, theirs, free=config_diff.RESUME_FREE_FIELDS) == []
  ours.optim.lr_drop_epochs = (2,)
  del theirs['model']['noisy_layers'], theirs['task']  # Saved before those fields existed: the defaults hold.
  del theirs['model']['lognormal_alpha']
  assert config_diff.differences(ours, theirs, free=config_diff.RESUME_FREE_FIELDS) == [
      ('model.lognormal_alpha', 0.5, config_diff.ABSENT), ('optim.lr_drop_epochs', [2], [1])]
  ours.model.noisy_layers = (1,)
  assert ('model.noisy_layers', [1], config_diff.ABSENT) in config_diff.differences(ours, theirs)


def test_a_start_that_fails_on_its_data_leaves_no_workdir(tmp_path):
  config = train_helpers.tiny_config()
  config.data.source = 'idx'
  config.data.path = str(tmp_path / 'no_such_mnist')
  workdir = tmp_path / 'new' / 'run'
  with pytest.raises(FileNotFoundError, match='no_such_mnist'):
    train.train_and_evaluate(config, str(workdir), model=train_helpers.TinyNoisyNet())
  assert not workdir.exists()
  # A workdir the user made stays, and keeps what it held.
  workdir.mkdir(parents=True)
  (workdir / 'notes.txt').write_text('mine')
  with pytest.raises(FileNotFoundError):
    train.train_and_evaluate(config, str(workdir), model=train_helpers.TinyNoisyNet())
  assert os.listdir(workdir) == ['notes.txt']
