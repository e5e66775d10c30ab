"""Random smooth diffeomorphisms of 3D space, for drawing new anatomies from one template.

A stationary velocity field v (a smooth random vector field on a regular grid, zero at the grid's border)
is exponentiated by scaling and squaring (Arsigny et al., MICCAI 2006): phi = exp(v) = (exp(v / 2^N))^(2^N),
with exp(v / 2^N) ~ id + v / 2^N for a small enough step. The flow of a smooth field is a diffeomorphism
and exp(-v) is its inverse, so the map never folds (its Jacobian determinant stays positive) however
large the field; outside the grid it is the identity.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import ndimage

F32 = np.float32


class Deformation(NamedTuple):
    """phi(x) = x + u(x): `displacement` u (3, *grid) in mm at the nodes origin + step * index; the
    identity outside the grid (u is zero on its border)."""
    displacement: np.ndarray
    origin: np.ndarray
    step: float

    def __call__(self, points: np.ndarray) -> np.ndarray:
        """phi at points (..., 3) in mm (trilinear between nodes)."""
        return points + self.displacement_at(points)

    def displacement_at(self, points: np.ndarray) -> np.ndarray:
        """u at points (..., 3) in mm."""
        return _interpolate(self.displacement, (points - self.origin) / F32(self.step))

    def jacobian_determinant(self) -> np.ndarray:
        """det(d phi / dx) at the grid nodes (central differences)."""
        grads = [np.gradient(self.displacement[i], self.step) for i in range(3)]  # grads[i][j] = du_i / dx_j
        J = np.empty(self.displacement.shape[1:] + (3, 3), F32)
        for i in range(3):
            for j in range(3):
                J[..., i, j] = grads[i][j] + (i == j)
        return np.linalg.det(J)


def _interpolate(field: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Trilinear samples (..., 3) of a vector field (3, *grid) at fractional node indices idx (..., 3);
    zero outside the grid (where the field is zero anyway)."""
    coords = np.moveaxis(idx, -1, 0).reshape(3, -1)
    out = np.stack([ndimage.map_coordinates(field[i], coords, order=1, mode="constant", cval=0.0, output=F32)
                    for i in range(3)], -1)
    return out.reshape(idx.shape)


def taper(shape: tuple[int, ...], width: int) -> np.ndarray:
    """1 inside, falling smoothly to 0 over `width` nodes at every face of the grid (a field times this is
    zero on the border, so its flow is the identity outside the grid)."""
    out = np.ones(shape, F32)
    for axis, n in enumerate(shape):
        d = np.minimum(np.arange(n), n - 1 - np.arange(n)) / max(width, 1)
        ramp = (0.5 - 0.5 * np.cos(np.pi * np.clip(d, 0, 1))).astype(F32)
        out *= ramp.reshape([-1 if a == axis else 1 for a in range(len(shape))])
    return out


def random_field(rng: np.random.Generator, shape: tuple[int, ...], step: float, correlation_mm: float) -> np.ndarray:
    """Smooth random vector field (3, *shape): white noise low-passed by a Gaussian of `correlation_mm`,
    scaled so that its largest vector has length 1."""
    v = rng.standard_normal((3,) + tuple(shape), dtype=F32)
    for i in range(3):
        v[i] = ndimage.gaussian_filter(v[i], correlation_mm / step, mode="constant")
    return v / F32(np.sqrt((v ** 2).sum(0)).max())


def exponentiate(velocity: np.ndarray, origin: np.ndarray, step: float, squarings: int = 7) -> Deformation:
    """exp(v) by scaling and squaring: u <- v / 2^N, then N times u <- u + u(x + u) (phi o phi)."""
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=F32) for n in velocity.shape[1:]], indexing="ij"), -1)
    u = velocity / F32(2 ** squarings)
    for _ in range(squarings):
        u = u + np.moveaxis(_interpolate(u, grid + np.moveaxis(u, 0, -1) / F32(step)), -1, 0)
    return Deformation(u.astype(F32), np.asarray(origin, F32), float(step))


def identity(origin: np.ndarray, shape: tuple[int, ...], step: float) -> Deformation:
    return Deformation(np.zeros((3,) + tuple(shape), F32), np.asarray(origin, F32), float(step))


def local_scaling(shape: tuple[int, ...], origin: np.ndarray, step: float, center, radii, log_scale: float) -> np.ndarray:
    """Velocity (3, *shape) whose flow scales the neighbourhood of `center` by exp(log_scale) (radial
    field log_scale * (x - c) under a Gaussian envelope of `radii` mm), e.g. to grow or shrink ventricles."""
    axes = [origin[i] + step * np.arange(n, dtype=F32) - F32(center[i]) for i, n in enumerate(shape)]
    rel = np.stack(np.meshgrid(*axes, indexing="ij"), 0)
    envelope = np.exp(-0.5 * sum((rel[i] / F32(radii[i])) ** 2 for i in range(3)))
    return (F32(log_scale) * rel * envelope).astype(F32)
