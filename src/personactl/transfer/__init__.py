"""Cross-model persona transfer: map a direction from a source model's activation
space (hidden size d_s) to a target model's (hidden size d_t).

`ridge` fits a linear map on paired activations (exact leave-one-out or k-fold
choice of the penalty); `baselines` holds the maps that need no pairs (pad,
interpolate, random orthogonal) and orthogonal Procrustes, to compare against.
"""
