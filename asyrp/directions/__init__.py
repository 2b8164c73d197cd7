"""h-space directions found without CLIP, written as h-function files that edit.py and ``edit(...)`` accept.

- ``pca_directions``: principal components of h over many images, per timestep or pooled (Haas et al. 2023).
- ``jacobian_directions``: top singular vectors of the Jacobian of eps w.r.t. h (Haas et al.) or of h w.r.t. x_t
  (the encoder pullback of Park et al. 2023), by subspace iteration with JVPs / VJPs, never a dense Jacobian.
- ``mean_diff_direction``: mean of h over images with an attribute minus the mean over images without it.
- ``boundary_direction``: the normal of a logistic-regression boundary in h-space at one step (BoundaryDiffusion).

Every finder returns ``Direction`` objects: one delta_h per listed timestep (or one global delta_h), scaled so that
strength 1 is one natural unit of h (one standard deviation along the direction, or the class separation), with
the metadata that names what found it. ``save_direction`` writes the project's h-function file format.
"""

from .files import direction_hfunction, save_direction
from .finders import (
    Direction,
    boundary_direction,
    jacobian_directions,
    mean_diff_direction,
    pca_directions,
    top_singular_vectors,
)
from .labels import oracle_labels, target_gain
from .record import HRecorder, Walk, record_walk

__all__ = [
    "Direction",
    "HRecorder",
    "Walk",
    "record_walk",
    "pca_directions",
    "jacobian_directions",
    "top_singular_vectors",
    "mean_diff_direction",
    "boundary_direction",
    "direction_hfunction",
    "save_direction",
    "oracle_labels",
    "target_gain",
]
