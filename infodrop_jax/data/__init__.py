"""Datasets for infodrop-jax: sources, preprocessing, generated variants, caching.

    from infodrop_jax import data
    splits = data.load(data.config.get_config('cifar10'))
"""
from infodrop_jax.data import config
from infodrop_jax.data.loader import load
from infodrop_jax.data.splits import DatasetSplits, Split

__all__ = ['DatasetSplits', 'Split', 'config', 'load']
