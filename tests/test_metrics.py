"""Run records: resuming past a torn metrics.jsonl line, and progress output on terminals versus logs."""
import io
import json

import pytest

from infodrop_jax import metrics


def _write_lines(path, records, tail=''):
  path.write_text(''.join(json.dumps(r) + '\n' for r in records) + tail, encoding='utf-8')


def _records(path):
  return [json.loads(line) for line in path.read_text(encoding='utf-8').splitlines()]


def test_torn_last_line_is_dropped_on_resume(tmp_path):
  path = tmp_path / metrics.METRICS_FILE
  _write_lines(path, [{'step': 10, 'loss': 1.0}, {'step': 20, 'loss': 0.5}], tail='{"step": 30, "lo')
  with pytest.warns(RuntimeWarning, match='torn last line 3'):
    writer = metrics.MetricWriter(str(tmp_path), tensorboard=False, resume_step=20)
  assert writer.discarded_up_to is None
  writer.write(30, {'loss': 0.25})
  writer.close()
  assert [r['step'] for r in _records(path)] == [10, 20, 30]


def test_a_fresh_start_drops_the_earlier_attempts_records(tmp_path):
  """No checkpoint to resume from: the run logs every step again, so the old records go (they would repeat)."""
  path = tmp_path / metrics.METRICS_FILE
  _write_lines(path, [{'step': 0, 'test/error_d': 0.9}, {'step': 4, 'loss': 1.0}, {'step': 8, 'loss': 0.5}],
               tail='{"step": 12, "lo')
  with pytest.warns(RuntimeWarning, match='torn last line 4'):
    writer = metrics.MetricWriter(str(tmp_path), tensorboard=False, resume_step=0)
  assert writer.discarded_up_to == 8 and writer.logged(4) == frozenset()
  writer.write(4, {'loss': 0.75})
  writer.close()
  assert _records(path) == [{'step': 4, 'loss': 0.75}]
  assert metrics.MetricWriter(str(tmp_path), tensorboard=False, resume_step=4).discarded_up_to is None


def test_resume_still_drops_records_past_the_checkpoint(tmp_path):
  path = tmp_path / metrics.METRICS_FILE
  _write_lines(path, [{'step': s} for s in (10, 20, 30)])
  metrics.MetricWriter(str(tmp_path), tensorboard=False, resume_step=20).close()
  assert [r['step'] for r in _records(path)] == [10, 20]


def test_damaged_line_before_the_end_is_an_error_naming_it(tmp_path):
  path = tmp_path / metrics.METRICS_FILE
  path.write_text('{"step": 10}\n{"step": 2\n{"step": 30}\n', encoding='utf-8')
  with pytest.raises(ValueError, match=r'metrics.jsonl, line 2'):
    metrics.MetricWriter(str(tmp_path), tensorboard=False, resume_step=20)


class _Stream(io.StringIO):

  def __init__(self, tty):
    super().__init__()
    self._tty = tty

  def isatty(self):
    return self._tty


def test_progress_redraws_in_place_only_on_a_terminal():
  tty, log = _Stream(True), _Stream(False)
  for stream in (tty, log):
    bar = metrics.ProgressBar(100, 10, stream=stream, log_interval_s=0.0)
    bar.start(0)
    for step in (50, 100):
      bar.update(step, step // 50, 0.5)
    bar.finish()
  assert tty.getvalue().count('\r') == 2 and tty.getvalue().endswith('\n')
  assert '\r' not in log.getvalue()
  lines = log.getvalue().splitlines()
  assert len(lines) == 2 and lines[0].startswith('step 50/100') and lines[1].startswith('step 100/100')


def test_progress_in_logs_is_rate_limited_but_shows_the_last_step():
  log = _Stream(False)
  bar = metrics.ProgressBar(100, 10, stream=log, log_interval_s=3600.0)
  bar.start(0)
  for step in range(10, 101, 10):
    bar.update(step, 0, 0.5)
  bar.finish()
  assert [line.split()[1] for line in log.getvalue().splitlines()] == ['10/100', '100/100']
