"""Test-wide setup: 8 forced CPU devices so pmap/sharding paths run on any machine."""
import os

# Must happen before jax is imported anywhere in the test session.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
_flag = "--xla_force_host_platform_device_count=8"
if _flag not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _flag).strip()

import pathlib
import shutil
import tempfile

import jax
import pytest

# Every training run builds fresh closures, so jit's in-memory cache misses across runs; identical programs (resume,
# eval, reruns) then come from an on-disk cache instead of being compiled again. The directory is private to this
# session: a cache shared with earlier runs (other flags, other versions) has crashed XLA:CPU on load.
_COMPILATION_CACHE = tempfile.mkdtemp(prefix='infodrop_jax_test_cache_')
jax.config.update('jax_compilation_cache_dir', _COMPILATION_CACHE)
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)


def pytest_sessionfinish(session, exitstatus):
  del session, exitstatus
  shutil.rmtree(_COMPILATION_CACHE, ignore_errors=True)

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data():
  """Path to ../shared/data; skips the test when it is not beside the checkout."""
  if not SHARED_DATA.is_dir():
    pytest.skip(f"real data not found at {SHARED_DATA} (expected ../shared/data beside the repo)")
  return SHARED_DATA
