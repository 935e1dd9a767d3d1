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

import pytest

# No persistent compilation cache: reloading XLA:CPU executables from it has aborted the process (SIGABRT), once
# with a cache shared across runs and once within a session, and at the tests' sizes compiling afresh is cheap.


# The data cache (infodrop_jax.data.config.CACHE_DIR_ENV) defaults to ~/.cache/infodrop_jax: tests write theirs to a
# private directory instead, so a test run neither fills nor reads the user's cache. TFDS writes under its data_dir
# only when it downloads, which tests never do.
_DATA_CACHE = tempfile.mkdtemp(prefix='infodrop_jax_test_data_cache_')
os.environ['INFODROP_CACHE_DIR'] = _DATA_CACHE


def pytest_sessionfinish(session, exitstatus):
  del session, exitstatus
  shutil.rmtree(_DATA_CACHE, ignore_errors=True)

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


# CI sets this: there the data is always beside the checkout, so a test that would skip for lack of it is a failure
# (coverage must not disappear silently).
REQUIRE_DATA_ENV = 'INFODROP_REQUIRE_DATA'


@pytest.fixture(scope="session")
def shared_data():
  """Path to ../shared/data; skips the test when it is not beside the checkout (fails under INFODROP_REQUIRE_DATA=1)."""
  if not (SHARED_DATA.is_dir() and any(SHARED_DATA.iterdir())):
    message = f"real data not found at {SHARED_DATA} (expected ../shared/data beside the repo)"
    if os.environ.get(REQUIRE_DATA_ENV) == '1':
      pytest.fail(f'{message}, and {REQUIRE_DATA_ENV}=1 says it must be there.')
    pytest.skip(message)
  return SHARED_DATA
