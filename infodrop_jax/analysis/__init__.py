"""Analyses of trained runs: `analyze(workdir)` writes the paper's figures and their numbers to `W/analysis/`.

  python launch.py --workdir=W --mode=analyze [--analysis.num_images=16] [--analysis.only=heatmaps,curves]

See `runner` for what each analysis computes, `stats` for the array-level functions (usable on their own) and
`figures` for the plots. `config` (the options) imports without JAX, so flag parsing stays light.
"""
from infodrop_jax.analysis.config import ANALYSES
from infodrop_jax.analysis.config import get_config

__all__ = ['ANALYSES', 'AnalysisError', 'analyze', 'get_config']


def __getattr__(name):
  if name in ('AnalysisError', 'analyze'):
    from infodrop_jax.analysis import runner  # pylint: disable=g-import-not-at-top
    return getattr(runner, name)
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
