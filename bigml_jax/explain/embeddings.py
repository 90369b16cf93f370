"""A run's embedding table: nearest neighbours by cosine, and a 2-D view.

For the word-embedding formulas: a query is any vector in the table's space
(a token's row, or e.g. row(king) - row(man) + row(woman)), and its
neighbours are the rows at the smallest angle to it.
"""

import jax
import jax.numpy as jnp


def unit_rows(x_NxD: jax.Array, eps: float = 1e-12) -> jax.Array:
  """Each row divided by its L2 norm (a zero row stays zero)."""
  x_NxD = x_NxD.astype(jnp.float32)
  norm_Nx1 = jnp.linalg.norm(x_NxD, axis=-1, keepdims=True)
  return x_NxD / jnp.maximum(norm_Nx1, eps)


def nearest_neighbours(table_VxD: jax.Array, queries_QxD: jax.Array, k: int,
                       exclude_QxV: jax.Array | None = None
                       ) -> tuple[jax.Array, jax.Array]:
  """(ids [Q, k], cosine similarities [Q, k]) of the k rows of the table
  most similar to each query, most similar first.

  `exclude_QxV` (bool) takes rows out of a query's candidates, e.g. the
  query's own tokens and the padding id.
  """
  sims_QxV = unit_rows(queries_QxD) @ unit_rows(table_VxD).T
  if exclude_QxV is not None:
    sims_QxV = jnp.where(exclude_QxV, -jnp.inf, sims_QxV)
  sims_QxK, ids_QxK = jax.lax.top_k(sims_QxV, k)
  return ids_QxK, sims_QxK


def pca_2d(x_NxD: jax.Array) -> jax.Array:
  """[N, 2]: the rows projected on their first two principal axes.

  The rows are centred; each axis's sign is chosen so that its largest
  coordinate is positive, so the picture is the same on every run.
  """
  centred_NxD = x_NxD.astype(jnp.float32) - x_NxD.mean(axis=0)
  _, _, vt_2xD = jnp.linalg.svd(centred_NxD, full_matrices=False)
  coords_Nx2 = centred_NxD @ vt_2xD[:2].T
  biggest_2 = jnp.take_along_axis(
      coords_Nx2, jnp.abs(coords_Nx2).argmax(axis=0)[None], axis=0)[0]
  return coords_Nx2 * jnp.where(biggest_2 < 0, -1.0, 1.0)
