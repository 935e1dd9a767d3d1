"""Known-answer tests of the analyses: every expected number is worked out by hand below, not by the code under test.

The localisation cases are asymmetric on purpose (peaks off the diagonal, non-square boxes and images, maps whose
size does not divide the input), so that swapping row and column, or x and y of a box, changes the answer.

Conventions checked here (from `infodrop_jax/data/generated.py`, `stats.BoxLocalization` and the README):
- a box is (y0, x0, y1, x1) in input pixels, y = row, x = column, end exclusive: it covers image[y0:y1, x0:x1];
- a map of h × w cells is upsampled by nearest neighbour, pixel row y showing cell row floor(y·h/H) (and likewise
  for columns), so 10 px over 3 cells gives cells of 4, 3, 3 pixels (pixels 0-3, 4-6, 7-9);
- `mass_in_box` is the share of the upsampled map's mass above its minimum that lies in the box; `pointing` is
  whether the centre of the argmax cell, ((row + ½)·H/h, (col + ½)·W/w) in continuous pixel coordinates, lies in
  [y0, y1) × [x0, x1); `chance` is the box's share of the image.
"""
import math
import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from infodrop_jax import analysis
from infodrop_jax import models
from infodrop_jax.analysis import runner
from infodrop_jax.analysis import stats
from infodrop_jax.data import generated
from infodrop_jax.data.splits import Split


def _localize(maps, boxes, height, width):
  loc = stats.BoxLocalization(input_height=height, input_width=width)
  loc.add(np.asarray(maps, np.float64), np.asarray(boxes))
  return loc.result()


# --- localisation on hand-made maps -------------------------------------------------------------------------------

# Case A: 10 × 10 input, 3 × 3 map, one hot cell off the diagonal and a non-square box.
#   Cell rows/cols cover pixels 0-3 (4 px), 4-6 (3 px), 7-9 (3 px).
#   map[0, 2] = 3: pixel rows 0-3 × cols 7-9 = 12 px, mass 36;  map[2, 0] = 1: rows 7-9 × cols 0-3 = 12 px, mass 12.
#   Box (y0, x0, y1, x1) = (0, 4, 4, 10): rows 0-3, cols 4-9 (4 × 6 = 24 px, chance 24/100).
#   mass_in_box = 36 / 48 = 3/4 (the whole of cell (0, 2), nothing of cell (2, 0)).
#   pointing: argmax cell (0, 2) has centre (y, x) = (½·10/3, 2½·10/3) = (1.67, 8.33), inside rows [0, 4) and cols
#   [4, 10): 1.
#   With x and y of the box swapped, (4, 0, 10, 4) covers rows 4-9, cols 0-3: cell (2, 0) only → mass 12/48 = 1/4,
#   and (1.67, 8.33) is outside → pointing 0. With row and column of the peak swapped the centre is (8.33, 1.67):
#   outside the box → pointing 0. With the map transposed the hot cell is (2, 0) → mass 1/4.
MAP_A = np.zeros((3, 3))
MAP_A[0, 2] = 3.0
MAP_A[2, 0] = 1.0
BOX_A = (0, 4, 4, 10)


def test_swapping_x_and_y_of_the_box_or_transposing_the_map_changes_the_answer():
  swapped = _localize(MAP_A[None], [(4, 0, 10, 4)], 10, 10)  # the same box read as (x0, y0, x1, y1)
  assert swapped['mass_in_box'] == pytest.approx(1 / 4, abs=1e-12)
  assert swapped['pointing'] == 0.0
  transposed = _localize(MAP_A.T[None], [BOX_A], 10, 10)  # hot cell (2, 0), centre (8.33, 1.67)
  assert transposed['mass_in_box'] == pytest.approx(1 / 4, abs=1e-12)
  assert transposed['pointing'] == 0.0


def test_the_minimum_is_subtracted_before_measuring_mass():
  # The same map on a baseline of +2 (every cell raised) or -5: after subtracting each map's minimum both are MAP_A,
  # so 3/4 again. (Without the subtraction they would give (2·24 + 36) / (2·100 + 48) = 84/248 = 21/62 ≈ 0.339 and
  # (-5·24 + 36) / (-5·100 + 48) = 84/452 ≈ 0.186.)
  result = _localize(np.stack([MAP_A + 2.0, MAP_A - 5.0]), [BOX_A, BOX_A], 10, 10)
  assert result['mass_in_box'] == pytest.approx(3 / 4, abs=1e-12)
  assert result['pointing'] == 1.0


def test_a_box_edge_through_cells_and_the_exclusive_end():
  # Case C: 10 × 10 input, 3 × 3 map, map[0, 1] = 2 and map[1, 1] = 6; box (2, 0, 5, 10) = rows 2, 3, 4, all columns.
  #   Cell row 0 (pixels 0-3) has 2 of its 4 rows in the box, cell row 1 (pixels 4-6) 1 of its 3; column cell 1 is
  #   pixels 4-6 (3 px).
  #   cell (0, 1): 4·3 px × 2 = 24, inside 2·3 × 2 = 12;  cell (1, 1): 3·3 px × 6 = 54, inside 1·3 × 6 = 18.
  #   mass_in_box = (12 + 18) / (24 + 54) = 30/78 = 5/13.
  #   pointing: argmax cell (1, 1) has centre (5, 5): y = 5 is not < y1 = 5 (end exclusive) → 0. (Read end-inclusive,
  #   rows 2-5, the box would hold 2 rows of cell row 1: mass 48/78, pointing 1.)
  #   chance = 3·10 / 100 = 0.3.
  maps = np.zeros((1, 3, 3))
  maps[0, 0, 1], maps[0, 1, 1] = 2.0, 6.0
  result = _localize(maps, [(2, 0, 5, 10)], 10, 10)
  assert result['mass_in_box'] == pytest.approx(5 / 13, abs=1e-12)
  assert result['pointing'] == 0.0
  assert result['chance'] == pytest.approx(0.3, abs=1e-12)


# Case D: a non-square input (H = 6 rows, W = 10 columns) and a non-square map (2 × 5 cells).
#   Rows: pixel y shows cell floor(2y/6): rows 0-2 → 0, 3-5 → 1 (3 px each). Columns: floor(5x/10) = x // 2 (2 px).
#   map[1, 0] = 4 (rows 3-5 × cols 0-1: 6 px, mass 24); map[0, 4] = 2 (rows 0-2 × cols 8-9: 6 px, mass 12).
#   Box (3, 0, 6, 2) is exactly cell (1, 0): mass_in_box = 24/36 = 2/3; chance = 3·2 / 60 = 0.1.
#   pointing: argmax flat index 5 = (row 1, col 0), centre (1½·6/2, ½·10/5) = (4.5, 1.0): inside → 1.
#   (Row and column swapped: (½·6/2, 1½·10/5) = (1.5, 3.0), outside. The image's height and width swapped: cells of
#   5 rows × 1.2 cols, centre (7.5, 0.6), outside rows [3, 6).)
MAP_D = np.zeros((2, 5))
MAP_D[1, 0] = 4.0
MAP_D[0, 4] = 2.0
BOX_D = (3, 0, 6, 2)


@pytest.mark.parametrize('heatmap, box, height, width, mass, chance', [
    (MAP_A, BOX_A, 10, 10, 3 / 4, 24 / 100),  # Case A: an off-diagonal peak in a non-square box.
    (MAP_D, BOX_D, 6, 10, 2 / 3, 0.1),  # Case D: a non-square image and map.
], ids=['off_diagonal_peak_in_a_non_square_box', 'non_square_image_and_map'])
def test_known_cases(heatmap, box, height, width, mass, chance):
  result = _localize(heatmap[None], [box], height, width)
  assert result['mass_in_box'] == pytest.approx(mass, abs=1e-12)
  assert result['pointing'] == 1.0
  assert result['chance'] == pytest.approx(chance, abs=1e-12)
  assert result['num_images'] == 1


def test_boxes_reaching_outside_the_image_are_clipped():
  # 10 × 10 input, 3 × 3 maps. Box (7, 7, 14, 12) clips to (7, 7, 10, 10) = exactly cell (2, 2) (pixels 7-9):
  # mass 1, centre (8.33, 8.33) inside, chance 9/100. Box (-3, -3, 4, 4) clips to (0, 0, 4, 4) = exactly cell (0, 0):
  # mass 1, centre (1.67, 1.67) inside, chance 16/100. Means: mass 1, pointing 1, chance 25/200.
  maps = np.zeros((2, 3, 3))
  maps[0, 2, 2] = 1.0
  maps[1, 0, 0] = 1.0
  result = _localize(maps, [(7, 7, 14, 12), (-3, -3, 4, 4)], 10, 10)
  assert result['mass_in_box'] == pytest.approx(1.0, abs=1e-12)
  assert result['pointing'] == 1.0
  assert result['chance'] == pytest.approx(25 / 200, abs=1e-12)


def test_results_are_means_over_every_image_added_in_any_batches():
  # Case A (mass 3/4, pointing 1, chance 0.24) and case C (5/13, 0, 0.3), added in two calls or one.
  map_c = np.zeros((3, 3))
  map_c[0, 1], map_c[1, 1] = 2.0, 6.0
  two_calls = stats.BoxLocalization(10, 10)
  two_calls.add(MAP_A[None], np.array([BOX_A]))
  two_calls.add(map_c[None], np.array([(2, 0, 5, 10)]))
  one_call = _localize(np.stack([MAP_A, map_c]), [BOX_A, (2, 0, 5, 10)], 10, 10)
  for result in (two_calls.result(), one_call):
    assert result['mass_in_box'] == pytest.approx((3 / 4 + 5 / 13) / 2, abs=1e-12)  # = 59/104
    assert result['pointing'] == pytest.approx(1 / 2, abs=1e-12)
    assert result['chance'] == pytest.approx((0.24 + 0.3) / 2, abs=1e-12)
    assert result['num_images'] == 2


def test_channel_heatmaps_sum_channels_and_keep_rows_and_columns():
  # kl[0, i, j, c] = 10 i + j + 100 c on a 2 × 3 map with 2 channels: the sum over c is 2 (10 i + j) + 100.
  i, j, c = np.meshgrid(np.arange(2), np.arange(3), np.arange(2), indexing='ij')
  kl = (10 * i + j + 100 * c)[None].astype(np.float32)
  np.testing.assert_array_equal(stats.channel_heatmaps(kl), [[[100, 102, 104], [120, 122, 124]]])


def test_cluttered_mnist_boxes_are_rows_then_columns_end_exclusive():
  # A digit 6 rows high and 3 columns wide, fully inked, on a 12 × 12 canvas without distractors: the canvas is
  # non-zero exactly on canvas[y0:y1, x0:x1] with y1 - y0 = 6 and x1 - x0 = 3.
  digits = np.full((6, 6, 3), 200, np.uint8)
  canvases, bbox, ink_bbox = generated.clutter(digits, np.random.default_rng(3), canvas_size=12, num_distractors=0,
                                               distractor_size=1)
  np.testing.assert_array_equal(bbox, ink_bbox)
  assert np.all(bbox[:, 2] - bbox[:, 0] == 6) and np.all(bbox[:, 3] - bbox[:, 1] == 3)
  assert not np.all(bbox[:, 0] == bbox[:, 1])  # some digit off the diagonal, so x and y differ
  for canvas, (y0, x0, y1, x1) in zip(canvases, bbox):
    expected = np.zeros((12, 12), np.uint8)
    expected[y0:y1, x0:x1] = 200
    np.testing.assert_array_equal(canvas, expected)
  # The canvas itself as a 12 × 12 heat map is all in its box: mass 1, peak inside, chance 18/144.
  result = _localize(canvases.astype(np.float64), bbox, 12, 12)
  assert result == pytest.approx({'mass_in_box': 1.0, 'pointing': 1.0, 'chance': 18 / 144, 'num_images': 6})
  # The same boxes read as (x0, y0, x1, y1) cover a 3 × 6 region, at most 3 × 3 of it on the 6 × 3 digit.
  assert _localize(canvases.astype(np.float64), bbox[:, [1, 0, 3, 2]], 12, 12)['mass_in_box'] <= 0.5


# --- the runner's analyses on stand-in forward passes with known outputs -----------------------------------------


class _FakeForward:
  """Stands in for runner._Forward: `fn(raw_images)` → (KL maps by layer, noise outputs by layer), traceable."""

  def __init__(self, fn):
    self.fn = fn

  def _fn(self, variables, raw_images, key, deterministic):
    del variables, key, deterministic
    kl_maps, outputs = self.fn(jnp.asarray(raw_images))
    self.noise_order = tuple(outputs)  # the noise layers in the order they ran, should the runner ask for it
    return kl_maps, outputs

  def __call__(self, raw_images, key, deterministic):
    return self._fn(None, raw_images, key, deterministic)


def _index_images(n, height=1, width=1):
  """float32 images whose every pixel is the image's index: the stand-in forward passes look their outputs up by it."""
  return np.broadcast_to(np.arange(n, dtype=np.float32)[:, None, None, None], (n, height, width, 1)).copy()


def _index_of(raw_images):
  return raw_images[:, 0, 0, 0].astype(jnp.int32)


def _context(tmp_path, test_split, fn, *, train_split=None, activation='relu', variables=None, batch_size=2,
             **options):
  config = ml_collections.ConfigDict({
      'seed': 0, 'data': {'name': 'cluttered_mnist'}, 'loss': {'beta': 1.0}, 'eval': {'batch_size': batch_size},
      'model': {'name': 'stand_in', 'dropout': 'information', 'activation': activation}})
  opts = analysis.get_config()
  opts.update(options)
  run = types.SimpleNamespace(splits=types.SimpleNamespace(train=train_split, test=test_split),
                              workdir=str(tmp_path))
  result = {'files': [], 'skipped': {}}
  ctx = runner._Context(config, opts, run, _FakeForward(fn), variables or {'params': {}}, {}, str(tmp_path),  # pylint: disable=protected-access
                        result, lambda _: None)
  return ctx, result


def test_runner_localises_each_image_against_its_own_box_in_y_x_order(tmp_path):
  # Three 6 × 10 images (H = 6 rows, W = 10 columns), one conv layer with 2 × 5 maps in 2 channels (¼ and ¾ of the
  # map), analysed in batches of 2. Geometry as case D: cell rows are pixel rows 0-2 / 3-5, cell columns 2 px wide.
  #   image 0: MAP_D, box (3, 0, 6, 2)                → mass 2/3, pointing 1, chance 6/60 = 0.1.
  #   image 1: map[1, 3] = 5, map[0, 1] = 1, box (3, 4, 6, 10) = rows 3-5, cols 4-9 (cells (1, 2), (1, 3), (1, 4)):
  #            mass 6·5 / (6·5 + 6·1) = 5/6; peak (1, 3), centre (4.5, 7.0), inside → 1; chance 18/60 = 0.3.
  #   image 2: a constant map (no information), box (3, 0, 6, 10), the bottom half: mass = chance = 0.5; the argmax
  #            of a constant map is cell (0, 0), centre (1.5, 1.0), outside rows [3, 6) → 0.
  #   Means: mass (2/3 + 5/6 + 1/2) / 3 = 2/3, pointing 2/3, chance (0.1 + 0.3 + 0.5) / 3 = 0.3.
  #   Boxes fed as (x0, y0, x1, y1) would give image 0 the box rows 0-1, cols 3-5: mass 0, pointing 0.
  maps = np.zeros((3, 2, 5), np.float32)
  maps[0] = MAP_D
  maps[1, 1, 3], maps[1, 0, 1] = 5.0, 1.0
  maps[2] = 1.0
  kl_table = jnp.asarray(np.stack([0.25 * maps, 0.75 * maps], axis=-1))  # [3, 2, 5, 2]
  boxes = np.array([BOX_D, (3, 4, 6, 10), (3, 0, 6, 10)], np.int32)
  split = Split(_index_images(3, 6, 10), np.zeros(3, np.int32), {'bbox': boxes})
  ctx, result = _context(tmp_path, split, lambda raw: ({'conv/noise': kl_table[_index_of(raw)]}, {}),
                         num_images=3)
  ctx.heatmaps()
  loc = result['localization']
  assert loc['mass_in_box']['conv/noise'] == pytest.approx(2 / 3, abs=1e-12)
  assert loc['pointing']['conv/noise'] == pytest.approx(2 / 3, abs=1e-12)
  assert loc['chance'] == pytest.approx(0.3, abs=1e-12)
  assert loc['num_images'] == 3
  arrays = np.load(tmp_path / 'heatmaps.npz')
  np.testing.assert_array_equal(arrays['indices'], [0, 1, 2])
  np.testing.assert_array_equal(arrays['conv/noise'], maps)
  np.testing.assert_array_equal(arrays['bbox'], boxes)


# Stand-in last noisy layer for the representation statistics: 4 images × 4 units, z = exp(log z) with
#   unit 0: log z = 0.5 + u,      u = (-1, -1, 1, 1)         → -0.5, -0.5, 1.5, 1.5
#   unit 1: log z = 3.5 + u + v,  v = (-1, 1, -1, 1)          → 1.5, 3.5, 3.5, 5.5
#   unit 2: z = 0 (a dead ReLU unit; its log is taken at the floor log 1e-4 for TC: a constant, left out)
#   unit 3: log z = -2 + 9 w,     w = (-1, 1, 1, -1)          → -11, 7, 7, -11 (below / above the histogram range)
# u, v, w are orthogonal and mean 0, so the sample covariance (ddof 1) of units 0, 1, 3 is
# [[4/3, 4/3, 0], [4/3, 8/3, 0], [0, 0, ·]]: correlation 1/√2 between units 0 and 1, 0 with unit 3 (whose floor at
# log 1e-4 for the two -11s keeps the pattern of w). det R = 1 - 1/2 = 1/2, so TC = -½ log ½ = ½ log 2 nats over
# 3 dimensions (1 constant dimension), 4 samples.
# Histogram of the positive log z on the default grid changed to 16 bins of 1 nat over [-10, 6] (bin k = [k-10, k-9)):
# bin 9 (-0.5): 2; bin 11 (1.5): 3; bin 13 (3.5): 2; bin 15 (5.5): 1; 2 values below -10 and 2 above 6; 4 zeros.
# KL maps [4, 2]: (1, 2), (3, 4), (0, 0), (5, 5): per example 3, 7, 0, 10 → 5 nats per example, 2.5 per unit.
_LOG_Z = np.array([[-0.5, 1.5, 0.0, -11.0], [-0.5, 3.5, 0.0, 7.0], [1.5, 3.5, 0.0, 7.0], [1.5, 5.5, 0.0, -11.0]])
_Z = np.where(np.arange(4) == 2, 0.0, np.exp(_LOG_Z)).astype(np.float32)
_KL = np.array([[1, 2], [3, 4], [0, 0], [5, 5]], np.float32)
_COUNTS = np.zeros(16, np.int64)
_COUNTS[[9, 11, 13, 15]] = [2, 3, 2, 1]


def _statistics_context(tmp_path, **kwargs):
  z_table, kl_table = jnp.asarray(_Z), jnp.asarray(_KL)
  split = Split(_index_images(4), np.zeros(4, np.int32), {})
  fn = lambda raw: ({'layer/noise': kl_table[_index_of(raw)]}, {'layer/noise': z_table[_index_of(raw)]})
  return _context(tmp_path, split, fn, batch_size=3, histogram_bins=16, **kwargs)


def test_runner_total_correlation_info_and_log_uniform_prior_fit_on_known_activations(tmp_path):
  ctx, result = _statistics_context(tmp_path)
  ctx.representation_statistics()
  assert result['info_per_layer'] == {'layer/noise': 5.0} and result['info_per_unit'] == {'layer/noise': 2.5}
  tc = result['total_correlation']
  assert tc['tc_nats'] == pytest.approx(0.5 * math.log(2), abs=1e-6)  # 0.34657359
  assert tc['tc_per_dim_nats'] == pytest.approx(0.5 * math.log(2) / 3, abs=1e-6)  # 0.11552453
  assert (tc['dims'], tc['constant_dims'], tc['samples'], tc['singular']) == (3, 1, 4, False)
  assert tc['variant'] == 'flattened' and tc['zero_fraction'] == 4 / 16
  fit = result['prior_fit']
  assert fit['prior'] == 'log_uniform' and fit['layer'] == 'layer/noise'
  assert (fit['positive_below_range'], fit['positive_above_range'], fit['zero_fraction']) == (2, 2, 0.25)
  # Log-uniform: flat in log z, normalised over the occupied bins' span [edge 9, edge 16) = [-1, 6]: 1/7 per nat.
  assert fit['drawn_range'] == [-1.0, 6.0]
  arrays = np.load(tmp_path / 'prior_fit.npz')
  np.testing.assert_array_equal(arrays['bin_edges'], np.arange(-10, 7))
  np.testing.assert_array_equal(arrays['counts'], _COUNTS)
  np.testing.assert_allclose(arrays['prior_density'], [0.0] * 9 + [1 / 7] * 7, rtol=1e-12, atol=0)


def test_runner_log_normal_prior_density_is_the_normal_density_of_log_z(tmp_path):
  # Learned prior μ = 0.5, σ = exp(log 2) = 2: the density of log z is N(0.5, 2²), at the bin centres -9.5 … 5.5:
  # p(c) = exp(-(c - 0.5)² / 8) / (2 √(2π)). Hand values: p(0.5) = 1/(2√(2π)) = 0.19947114020071635,
  # p(2.5) = p(0.5)·e^(-1/2) = 0.12098536225957168, p(-3.5) = p(0.5)·e^(-2) = 0.02699548325659403,
  # p(-9.5) = p(0.5)·e^(-12.5) = 7.433597573671488e-07. (The density of z itself, divided by z = e^c, would be
  # another curve: p(0.5)/e^0.5 = 0.121 at c = 0.5.)
  variables = {'params': {'layer': {'noise': {'prior_mu': 0.5, 'prior_log_sigma': math.log(2.0)}}}}
  ctx, result = _statistics_context(tmp_path, activation='softplus', variables=variables)
  ctx.representation_statistics()
  fit = result['prior_fit']
  assert fit['prior'] == 'log_normal' and fit['mu'] == 0.5 and fit['sigma'] == pytest.approx(2.0, rel=1e-15)
  density = np.load(tmp_path / 'prior_fit.npz')['prior_density']
  expected = {10: 0.19947114020071635, 12: 0.12098536225957168, 6: 0.02699548325659403, 0: 7.433597573671488e-07}
  for k, value in expected.items():
    assert density[k] == pytest.approx(value, rel=1e-12), k
  centres = np.arange(16) - 9.5
  np.testing.assert_allclose(density, np.exp(-(centres - 0.5) ** 2 / 8) / (2 * math.sqrt(2 * math.pi)), rtol=1e-12)


def test_runner_probes_the_nuisance_label_not_the_class(tmp_path):
  # Features = 3 × one-hot(nuisance label) + N(0, 0.1²) in 4 dims, main labels independent of them: a probe that
  # learns the nuisance label reaches 0 error; one trained on the class labels would be near 75 %.
  # Test nuisance labels: 100 × 0, 50 × 1, 30 × 2, 20 × 3, so chance (the majority class's error) = 1 - 100/200 = 0.5.
  rng = np.random.default_rng(0)

  def split(nuisance):
    n = len(nuisance)
    features = 3.0 * np.eye(4, dtype=np.float32)[nuisance] + rng.normal(0, 0.1, (n, 4)).astype(np.float32)
    return Split(features[:, None, None, :], rng.integers(0, 4, n).astype(np.int32),
                 {'nuisance_label': nuisance.astype(np.int32)})

  train_split = split(rng.integers(0, 4, 800))
  test_split = split(np.repeat(np.arange(4), [100, 50, 30, 20]))
  ctx, result = _context(tmp_path, test_split, lambda raw: ({}, {'layer/noise': raw.reshape(raw.shape[0], -1)}),
                         train_split=train_split, probe_epochs=3, probe_batch_size=100, probe_learning_rate=0.05)
  ctx.nuisance_probe()
  nuisance = result['nuisance']
  assert nuisance['nuisance_error'] == 0.0
  assert nuisance['chance_error'] == 0.5
  assert nuisance['layer'] == 'layer/noise' and nuisance['probe']['feature_dim'] == 4


def test_the_last_noisy_layer_is_the_last_the_model_runs(tmp_path):
  # All-CNN-32 runs its noise modules in the order input_dropout (Bernoulli on the pixels), block1_pool/noise,
  # block2_pool/noise. TC, the prior fit and the nuisance probe are about the representation: the last of them,
  # block2_pool/noise, not the input pixels.
  # Only shapes are traced here (no compilation): zero parameters of the right shapes will do.
  model = models.all_cnn_32(filter_percentage=0.05, num_classes=3)
  images = np.zeros((2, 8, 8, 3), np.uint8)
  shapes = jax.eval_shape(lambda: model.init({'params': jax.random.PRNGKey(0)}, images.astype(np.float32),
                                             deterministic=True))
  variables = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
  run = types.SimpleNamespace(model=model, model_inputs=lambda batch, key: batch,
                              parallel=types.SimpleNamespace(jit=jax.jit),
                              splits=types.SimpleNamespace(test=Split(images, np.zeros(2, np.int32), {})))
  forward = runner._Forward(run, variables)  # pylint: disable=protected-access
  config = ml_collections.ConfigDict({'seed': 0, 'eval': {'batch_size': 2}})
  ctx = runner._Context(config, analysis.get_config(), run, forward, variables, {}, str(tmp_path), {'files': []},  # pylint: disable=protected-access
                        lambda _: None)
  assert set(ctx.noise_shapes) == {'input_dropout', 'block1_pool/noise', 'block2_pool/noise'}
  assert ctx.last_noise == 'block2_pool/noise'


# --- total correlation, probe: closed forms ------------------------------------------------------------------------


def _tc(covariance, samples=10**6):
  return stats.gaussian_total_correlation(np.asarray(covariance, np.float64), samples)


def test_total_correlation_closed_forms():
  # Two dims, σ = (2, 3), ρ = 0.6: det R = 1 - 0.36 = 0.64, TC = -½ log 0.64 = log 1.25 = 0.22314355131420976
  # (scale-free: the variances 4 and 9 do not enter), per dimension ÷ 2. ρ = -0.6 gives the same.
  for rho in (0.6, -0.6):
    result = _tc([[4.0, rho * 6.0], [rho * 6.0, 9.0]])
    assert result['tc_nats'] == pytest.approx(0.22314355131420976, rel=1e-12)
    assert result['tc_per_dim_nats'] == pytest.approx(0.22314355131420976 / 2, rel=1e-12)
    assert (result['dims'], result['constant_dims'], result['singular']) == (2, 0, False)
  # Independent dims: R = I, TC = 0.
  assert _tc(np.diag([1.0, 4.0, 9.0]))['tc_nats'] == pytest.approx(0.0, abs=1e-15)
  # Equicorrelated, D = 4, ρ = ½: eigenvalues 1 + 3ρ = 2.5 and 1 - ρ = ½ (three times), det = 2.5/8 = 0.3125,
  # TC = -½ log 0.3125 = ½ log 3.2 = 0.5815754049028404.
  equi = np.full((4, 4), 0.5) + 0.5 * np.eye(4)
  assert _tc(equi)['tc_nats'] == pytest.approx(0.5815754049028404, rel=1e-12)
  # Independent blocks add: ρ = 0.6 and ρ = 0.8 pairs: log 1.25 + (-½ log 0.36 = -log 0.6) = log(1.25/0.6)
  # = 0.7339691750802005.
  blocks = np.zeros((4, 4))
  blocks[:2, :2] = [[1.0, 0.6], [0.6, 1.0]]
  blocks[2:, 2:] = [[1.0, 0.8], [0.8, 1.0]]
  assert _tc(blocks)['tc_nats'] == pytest.approx(0.7339691750802005, rel=1e-12)
  # A constant dimension is left out: the ρ = 0.6 pair beside a zero-variance unit is log 1.25 over 2 dims.
  with_constant = np.zeros((3, 3))
  with_constant[:2, :2] = [[4.0, 3.6], [3.6, 9.0]]
  result = _tc(with_constant)
  assert result['tc_nats'] == pytest.approx(0.22314355131420976, rel=1e-12)
  assert (result['dims'], result['constant_dims']) == (2, 1)


def test_perfectly_correlated_dimensions_are_singular():
  # x2 = 2 x1 + 3: R = [[1, 1], [1, 1]], det R = 0, TC = +∞: reported as singular, no number.
  x = np.random.default_rng(0).normal(size=1000)
  moments = stats.MomentAccumulator(2)
  moments.add(np.stack([x, 2 * x + 3], axis=1))
  result = stats.gaussian_total_correlation(moments.covariance(), moments.n)
  assert result['singular'] and result['tc_nats'] is None and result['tc_per_dim_nats'] is None


def test_moment_accumulator_covariance_and_tc_by_hand():
  # Rows (1, 2), (3, 6), (5, 4): mean (3, 4), deviations (-2, -2), (0, 2), (2, 0); covariance (÷ n - 1 = 2)
  # [[8/2, 4/2], [4/2, 8/2]] = [[4, 2], [2, 4]]; R = [[1, ½], [½, 1]], det ¾, TC = ½ log(4/3) = 0.14384103622589042.
  # Shifting every row by 1000 changes nothing.
  for shift in (0.0, 1000.0):
    moments = stats.MomentAccumulator(2)
    moments.add(np.array([[1.0, 2.0]]) + shift)
    moments.add(np.array([[3.0, 6.0], [5.0, 4.0]]) + shift)
    np.testing.assert_allclose(moments.covariance(), [[4.0, 2.0], [2.0, 4.0]], rtol=1e-9)
    result = stats.gaussian_total_correlation(moments.covariance(), moments.n)
    assert result['tc_nats'] == pytest.approx(0.14384103622589042, rel=1e-9)
    assert (result['samples'], result['singular']) == (3, False)


def test_probe_on_linearly_separable_features_makes_no_error():
  # Features 3 × one-hot(label) + N(0, 0.1²): classes separated by a margin of ~30 noise standard deviations.
  rng = np.random.default_rng(1)

  def make(n):
    labels = rng.integers(0, 4, n).astype(np.int32)
    return 3.0 * np.eye(8, dtype=np.float32)[labels] + rng.normal(0, 0.1, (n, 8)).astype(np.float32), labels

  (x_train, y_train), (x_test, y_test) = make(1000), make(1000)
  result = stats.train_softmax_probe(lambda x, key: x, x_train, y_train, x_test, y_test, 4, epochs=3,
                                     batch_size=100, learning_rate=0.05, key=jax.random.PRNGKey(0))
  assert result['test_error'] == 0.0 and result['train_error'] == 0.0


def test_probe_on_label_independent_features_is_at_chance():
  # Labels uniform over 4 classes, features independent of them: whatever the probe predicts, each of the 2000 test
  # labels is right with probability ¼ independently, so the errors are Binomial(2000, ¾): mean 0.75, standard
  # deviation √(¾·¼/2000) = 0.00968. Allow 4 standard deviations.
  rng = np.random.default_rng(2)

  def make(n):
    return rng.normal(size=(n, 16)).astype(np.float32), rng.integers(0, 4, n).astype(np.int32)

  (x_train, y_train), (x_test, y_test) = make(1000), make(2000)
  result = stats.train_softmax_probe(lambda x, key: x, x_train, y_train, x_test, y_test, 4, epochs=3,
                                     batch_size=100, learning_rate=0.05, key=jax.random.PRNGKey(0))
  assert abs(result['test_error'] - 0.75) <= 4 * math.sqrt(0.75 * 0.25 / 2000)
