"""The `gaussian_ring` builder: sizes, geometry, the same points everywhere."""

import ml_collections
import numpy as np

from bigml_jax.data import pipeline
from bigml_jax.data.builders import ring


def test_gaussian_ring_points_sit_on_their_modes(data_dir):
  sources = pipeline.load_sources(ml_collections.ConfigDict({
      'name': 'gaussian_ring', 'train_split': 'train', 'eval_split': 'test',
      'data_dir': data_dir}))
  assert (len(sources.train), len(sources.eval)) == (50_000, 5_000)
  assert sources.num_classes == 8
  test = sources.eval.__getitems__(list(range(5_000)))
  points = np.stack([r['image'] for r in test])
  labels = np.array([r['label'] for r in test])
  assert points.dtype == np.float32 and points.shape == (5_000, 2)
  offsets = points - ring.mode_centers()[labels]
  # 2-D Gaussian noise: |offset| / sigma is Rayleigh, P(> 5) = 4e-6.
  assert np.linalg.norm(offsets, axis=1).max() < 5 * ring.SIGMA
  np.testing.assert_allclose(offsets.std(axis=0), ring.SIGMA, rtol=0.05)
  np.testing.assert_allclose(np.bincount(labels) / 5_000, 1 / 8, atol=0.02)
  # Fixed seeds: train and test are different draws.
  assert not np.allclose(sources.train[0]['image'], test[0]['image'])
