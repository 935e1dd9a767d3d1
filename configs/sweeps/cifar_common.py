"""Shared settings of the CIFAR sweep presets (fig3b, fig4, fig5, fig6); not a sweep itself.

CPU variants train on the offline CIFAR-10 JPEG proxy (lossy: not canonical CIFAR-10) under the data root
($INFODROP_DATA_DIR, else ../shared/data). Full variants read canonical CIFAR-10 the base config's usual way (TFDS
or the original files; `--config.data.download=True` is not a sweep field: prepare the data once with a normal run).
Override the choice with --config.data=proxy|canonical|'' ('' = whatever the base config says).
"""
from __future__ import annotations

# 5 epochs of the whole 50 000-image training split (500 steps of 100 per epoch), lr ×0.1 at epoch 4, one evaluation
# at the end: the smallest run that sees every training image. (5 000 images × 5 epochs could not separate methods.)
CPU_OVERRIDES = ('train.num_epochs=5', 'optim.lr_drop_epochs=(4,)', 'eval.every_epochs=0', 'logging.progress_bar=False')
# 1 epoch of the base's smoke data (512 proxy images): for checking a preset end to end in a minute or two.
SMOKE_OVERRIDES = ('train.num_epochs=1', 'eval.every_epochs=0', 'logging.tensorboard=False')
FULL_OVERRIDES = ('logging.progress_bar=False',)
# cifar_info's 200 epochs took 309 s end to end on one H100 (benchmarks/RESULTS.md); analysis adds about 30 s.
H100_POINT = 'about 5–6 min per point on one H100 (309 s measured for cifar_info\'s 200 epochs, plus the analysis)'
