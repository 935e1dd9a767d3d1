"""Options of `--mode=analyze` (`--analysis.<field>=value`); plain ml_collections so flag parsing needs no JAX."""
from __future__ import annotations

import ml_collections

# Every analysis `--mode=analyze` knows, in the order it runs them.
ANALYSES = ('train_error', 'heatmaps', 'total_correlation', 'info_per_layer', 'prior_fit', 'nuisance_probe', 'curves',
            'information_plane')


def get_config() -> ml_collections.ConfigDict:
  """Defaults of the analysis options.

  Fields:
    only: comma-separated subset of ANALYSES; '' runs every analysis that applies to the run (the others are
      listed in analysis.json under 'skipped' with the reason). Naming one that does not apply is an error.
    num_images: test images in the heatmap figure (the first ones of a fixed random choice).
    batch_size: examples per forward pass; 0 = the run's eval batch size.
    probe_epochs, probe_batch_size, probe_learning_rate: the nuisance probe's softmax regression (Adam).
    histogram_bins: bins of the prior-fit histogram of log z.
    output_subdir: where under the workdir the results go.
    out_dir: where the results go instead, when not '' (a writable directory: e.g. for a workdir on a read-only
      file system, or a copy of someone else's run).
  """
  config = ml_collections.ConfigDict()
  config.only = ''
  config.num_images = 16
  config.batch_size = 0
  config.probe_epochs = 10
  config.probe_batch_size = 128
  config.probe_learning_rate = 1e-3
  config.histogram_bins = 120
  config.output_subdir = 'analysis'
  config.out_dir = ''
  return config
