"""Anatomy-like complex MR images: knee (coronal 2D stacks and 3D volumes), brain (axial), cardiac cine.

Each phantom is a small 3D anatomical model in millimetres (x = left-right, y = posterior-anterior,
z = inferior-superior) built from soft-edged shapes. A shape is its approximate signed distance
(negative inside), so shells (bone cortex, cartilage, skull) are distance bands and unions are minima.
Shapes are painted in order with tissue intensities of the chosen contrast (PD, PD fat-sat, T1, T2,
FLAIR, bSSFP). Textures are random Fourier series evaluated at anatomical coordinates, so they are
continuous in 3D and move with the anatomy. A random rigid transform and per-axis scaling give every
volume its own size, position and orientation; slices of a stack are planes through one model, so
anatomy varies smoothly across slices. A smooth low-order phase makes the image complex.

Everything is drawn from the `np.random.Generator` passed in: the same generator state gives the same
image. Magnitudes are O(1) (brightest tissue ~ 1).
"""
from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .deformation import Deformation, exponentiate, local_scaling, random_field, taper

F32 = np.float32

KNEE_FOV_MM = 140.0                     # fastMRI coronal knee
BRAIN_FOV_MM = 220.0                    # fastMRI axial brain
KNEE3D_FOV_MM = 160.0                   # larger phase-encode axis of the sagittal 3D FSE (mridata-style)
CINE_FOV_MM = 240.0                     # short-axis cine, centred on the heart

# Relative signal of each tissue per contrast. Knee: fatty marrow is bright on PD and dark with fat-sat,
# fluid is bright on fat-sat. Brain: CSF dark on T1/FLAIR and bright on T2. Cine (bSSFP): bright blood.
KNEE_TISSUES = {
    "PD": dict(fat=0.95, muscle=0.36, marrow=0.82, cortex=0.04, cartilage=0.58, fluid=0.62, meniscus=0.06,
               ligament=0.08, tendon=0.06, artery=0.10, vein=0.50, skin=0.45),
    "PDFS": dict(fat=0.12, muscle=0.30, marrow=0.15, cortex=0.03, cartilage=0.50, fluid=1.00, meniscus=0.05,
                 ligament=0.08, tendon=0.05, artery=0.08, vein=0.70, skin=0.25),
}
BRAIN_TISSUES = {
    "T1": dict(wm=0.85, gm=0.55, deep_gm=0.62, csf=0.10, scalp=0.95, skull=0.04, diploe=0.72, muscle=0.45),
    "T1POST": dict(wm=0.85, gm=0.57, deep_gm=0.64, csf=0.14, scalp=0.95, skull=0.04, diploe=0.75, muscle=0.5),
    "T2": dict(wm=0.40, gm=0.60, deep_gm=0.50, csf=1.00, scalp=0.70, skull=0.04, diploe=0.45, muscle=0.30),
    "FLAIR": dict(wm=0.50, gm=0.72, deep_gm=0.62, csf=0.06, scalp=0.75, skull=0.04, diploe=0.50, muscle=0.35),
}
CINE_TISSUES = dict(blood=1.0, myocardium=0.28, fat=0.85, muscle=0.30, soft=0.40, lung=0.05, marrow=0.50,
                    cortex=0.05, csf=0.90, liver=0.38)

# Per-volume variation (drawn from the volume's generator): every tissue intensity is scaled by a factor
# uniform in 1 +- TISSUE_JITTER; texture amplitudes by a log-uniform factor in TEXTURE_GAIN and texture
# wavelengths by a uniform factor in TEXTURE_SCALE; a fine multiplicative grain of relative amplitude
# uniform in FINE_TEXTURE.
TISSUE_JITTER = 0.12
TEXTURE_GAIN, TEXTURE_SCALE, FINE_TEXTURE = (0.6, 1.7), (0.8, 1.25), (0.01, 0.04)

# 2D stacks span about this much (mm) whatever the slice count; spacing is clipped to [1, 5] / [1, 7.5] mm
KNEE_STACK_MM, BRAIN_STACK_MM = 50.0, 60.0

_KNEE_CONTRAST = {"CORPD_FBK": "PD", "CORPDFS_FBK": "PDFS", "3D-FSE": "PD"}
_BRAIN_CONTRAST = {"AXT1": "T1", "AXT1PRE": "T1", "AXT1POST": "T1POST", "AXT2": "T2", "AXFLAIR": "FLAIR"}


# ----------------------------------------------------------------------------------------------------
# Geometry: signed distances (mm, negative inside), soft fills, textures, placement
# ----------------------------------------------------------------------------------------------------

def _rotation(deg_x: float = 0.0, deg_y: float = 0.0, deg_z: float = 0.0) -> np.ndarray:
    """Rotation matrix, x then y then z (degrees)."""
    ax, ay, az = np.deg2rad([deg_x, deg_y, deg_z])
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return (rz @ ry @ rx).astype(F32)


def _ellipsoid(P: np.ndarray, center, axes, p: float = 2.0, rot: np.ndarray | None = None) -> np.ndarray:
    """Approximate signed distance to a (super)ellipsoid: (r - 1) / |grad r|, exact on the surface."""
    u = P - np.asarray(center, F32)
    if rot is not None:
        u = u @ rot
    a = np.asarray(axes, F32)
    q = np.abs(u) / a
    qp = q ** (p - 1) if p != 2.0 else q
    r = ((q ** p).sum(-1)) ** (1.0 / p) if p != 2.0 else np.sqrt((q * q).sum(-1))
    g = np.sqrt(((qp / a) ** 2).sum(-1))  # = r^(p-1) |grad r|
    with np.errstate(divide="ignore", invalid="ignore"):
        d = (r - 1) * r ** (p - 1) / g
    return np.where(g > 1e-12, d, -a.min()).astype(F32)


def _ellipse(x, y, cx, cy, a, b) -> np.ndarray:
    """Approximate signed distance to an ellipse in the x-y plane (a cylinder along z); parameters may be
    arrays broadcasting with x and y (sizes that change along z or over cardiac frames)."""
    u, v = x - cx, y - cy
    r = np.sqrt((u / a) ** 2 + (v / b) ** 2)
    g = np.sqrt((u / a ** 2) ** 2 + (v / b ** 2) ** 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        d = (r - 1) * r / g
    return np.where(g > 1e-12, d, -np.minimum(a, b)).astype(F32)


def _segment(P: np.ndarray, a, b, radius: float) -> np.ndarray:
    """Capsule of `radius` around the segment a-b."""
    a, b = np.asarray(a, F32), np.asarray(b, F32)
    ab = b - a
    t = np.clip(((P - a) @ ab) / float(ab @ ab), 0.0, 1.0)
    return np.linalg.norm(P - a - t[..., None] * ab, axis=-1) - F32(radius)


def _fill(d: np.ndarray, w: float) -> np.ndarray:
    """Soft indicator of d < 0 with an edge about `w` mm wide (anti-aliasing at the pixel size)."""
    return (0.5 - 0.5 * np.tanh(d / F32(2 * w))).astype(F32)


def _texture(P: np.ndarray, rng: np.random.Generator, wavelength: float, pix: float = 0.0,
             stretch=(1.0, 1.0, 1.0), modes: int = 32, gradient: bool = False):
    """Zero-mean random field with the given wavelength (mm): a sum of random plane waves, unit variance.

    Detail finer than ~3 pixels (`pix` mm) would alias, so the wavelength is raised to 3 * pix and the
    amplitude lowered in proportion (fine texture averages out in big voxels). `stretch` > 1 lengthens
    the correlation along that axis (muscle fibres, septa along the leg). With `gradient`, also returns
    the spatial gradient (..., 3) in 1/mm.

    P must be an affine grid (every grid here is: a rigid transform of a regular one), so each plane
    wave factorises over the grid axes and the sum over waves is a matrix product, not N x modes cosines."""
    lam = max(wavelength, 3.0 * pix)
    dirs = rng.standard_normal((modes, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    k = ((2 * np.pi / (lam * rng.uniform(0.75, 1.3, (modes, 1)))) * dirs / np.asarray(stretch)).T  # (3, modes)
    phase = rng.uniform(0, 2 * np.pi, modes)
    amp = np.sqrt(2.0 / modes) * wavelength / lam

    grid = P.shape[:-1]
    origin = P[(0,) * len(grid)].astype(np.float64)
    steps = [(P[tuple(int(e == d and n > 1) for e in range(len(grid)))] - P[(0,) * len(grid)]).astype(np.float64)
             for d, n in enumerate(grid)]
    corner = origin + sum((n - 1) * st for n, st in zip(grid, steps))
    assert np.allclose(P[(-1,) * len(grid)], corner, atol=1e-2), "texture needs an affine grid"
    factors = [np.exp(1j * np.outer(st @ k, np.arange(n))) for st, n in zip(steps, grid)]  # (modes, n) per axis
    weights = amp * np.exp(1j * (origin @ k + phase))
    letters = "abcdefgh"[:len(grid)]
    expr = "m," + ",".join(f"m{c}" for c in letters) + "->" + letters

    def wave_sum(w: np.ndarray) -> np.ndarray:
        return np.einsum(expr, w, *factors, optimize=True).real.astype(F32)

    out = wave_sum(weights)
    if not gradient:
        return out
    return out, np.stack([wave_sum(1j * k[c] * weights) for c in range(3)], -1)


def _subject_texture(rng: np.random.Generator):
    """`_texture` with this subject's texture style: amplitude x TEXTURE_GAIN and wavelength x TEXTURE_SCALE,
    both drawn once per volume (tissue heterogeneity differs between subjects, scanners and sequences)."""
    gain = float(np.exp(rng.uniform(*np.log(TEXTURE_GAIN))))
    scale = float(rng.uniform(*TEXTURE_SCALE))

    def tex(P: np.ndarray, wavelength: float, pix: float, **kw) -> np.ndarray:
        return gain * _texture(P, rng, wavelength * scale, pix, **kw)

    return tex


def _fine_texture(P: np.ndarray, rng: np.random.Generator, pix: float) -> np.ndarray:
    """Multiplicative grain at the finest unaliased scale (3 pixels), amplitude drawn from FINE_TEXTURE:
    sub-voxel structure (vessels, trabeculae, partial volumes) that a smooth model lacks."""
    return (1 + rng.uniform(*FINE_TEXTURE) * _texture(P, rng, 0.0, pix)).astype(F32)


class _Canvas:
    """Painter's algorithm with soft masks: later tissues cover earlier ones."""

    def __init__(self, shape):
        self.img = np.zeros(shape, F32)

    def paint(self, mask: np.ndarray, value) -> None:
        self.img += mask * (value - self.img)


def _place(P: np.ndarray, rng: np.random.Generator, max_deg, max_shift_mm, scale_range,
           center=(0.0, 0.0, 0.0)) -> np.ndarray:
    """Scanner coordinates -> anatomical coordinates of a randomly rotated, shifted and scaled subject
    whose point `center` (+- max_shift_mm) sits at the scanner's isocentre."""
    M, shift = _placement(rng, max_deg, max_shift_mm, scale_range, center)
    return (P @ M + shift).astype(F32)


def _placement(rng: np.random.Generator, max_deg, max_shift_mm, scale_range, center) -> tuple[np.ndarray, np.ndarray]:
    """The affine map of `_place`: anatomical = scanner @ M + shift (row vectors)."""
    rot = _rotation(*(rng.uniform(-1, 1, 3) * np.asarray(max_deg)))
    shift = rng.uniform(-1, 1, 3) * np.asarray(max_shift_mm) + np.asarray(center)
    scale = rng.uniform(*scale_range) * rng.uniform(0.95, 1.05, 3)
    return (rot / scale[None, :].astype(F32)).astype(F32), shift.astype(F32)


def slice_spacing_mm(kind: str, slices: int) -> float:
    """Distance between the slices of a knee2d / brain2d stack (the header's slice thickness)."""
    if kind == "knee2d":
        return float(np.clip(KNEE_STACK_MM / slices, 1.0, 5.0))
    if kind == "brain2d":
        return float(np.clip(BRAIN_STACK_MM / slices, 1.0, 7.5))
    raise ValueError(f"no slice spacing for kind {kind!r}")


def _stack_grid(slices: int, shape: tuple[int, int], fov_mm: float, spacing_mm: float, view: str) -> np.ndarray:
    """Scanner coordinates (slices, H, W, 3) of a centred stack of 2D planes.

    view "coronal": rows = superior->inferior, cols = x, slices along y; "axial": rows = anterior->posterior,
    cols = x, slices along z (bottom to top)."""
    H, W = shape
    pix = fov_mm / max(H, W)
    rows = ((H // 2) - np.arange(H)) * pix          # top row is superior / anterior
    cols = (np.arange(W) - (W // 2)) * pix
    pos = (np.arange(slices) - (slices - 1) / 2) * spacing_mm
    P = np.zeros((slices, H, W, 3), F32)
    P[..., 0] = cols[None, None, :]
    if view == "coronal":
        P[..., 1] = pos[:, None, None]
        P[..., 2] = rows[None, :, None]
    elif view == "axial":
        P[..., 1] = rows[None, :, None]
        P[..., 2] = pos[:, None, None]
    else:
        raise ValueError(f"unknown view {view!r}")
    return P


def smooth_phase(rng: np.random.Generator, shape: tuple[int, ...], scale: float = 1.0) -> np.ndarray:
    """Smooth background phase (radians) over a 2D or 3D `shape`: a random polynomial of degree 2 in
    coordinates normalised to [-1, 1] per axis (B0 and coil-combination phase vary slowly in space)."""
    n = len(shape)
    coords = np.meshgrid(*[np.linspace(-1, 1, s, dtype=F32) for s in shape], indexing="ij")
    phi = np.full(shape, rng.uniform(-np.pi, np.pi), F32)
    for i in range(n):
        phi += F32(scale * rng.normal(0, 0.8)) * coords[i]
        for j in range(i, n):
            phi += F32(scale * rng.normal(0, 0.5)) * coords[i] * coords[j]
    return phi


def stack_phase(rng: np.random.Generator, slices: int, shape: tuple[int, int]) -> np.ndarray:
    """(slices, H, W) phase: one in-plane polynomial that drifts slowly across slices."""
    base = smooth_phase(rng, shape)
    drift = smooth_phase(rng, shape, scale=0.3)
    t = np.linspace(-1, 1, slices, dtype=F32)[:, None, None] if slices > 1 else np.zeros((1, 1, 1), F32)
    return base[None] + t * drift[None]


def _complex(mag: np.ndarray, phase: np.ndarray) -> np.ndarray:
    return (mag * np.exp(1j * phase)).astype(np.complex64)


def _contrast(table: dict, aliases: dict, acquisition: str, what: str, rng: np.random.Generator) -> dict:
    """This subject's tissue intensities: the protocol's table, each value jittered by 1 +- TISSUE_JITTER."""
    key = aliases.get(acquisition, acquisition)
    if key not in table:
        raise ValueError(f"unknown {what} acquisition {acquisition!r}; known: {sorted(aliases)}")
    return jitter_tissues(rng, table[key])


def jitter_tissues(rng: np.random.Generator, tissues: dict) -> dict:
    """Tissue intensities scaled independently by factors uniform in 1 +- TISSUE_JITTER (sorted names, so
    the draws do not depend on the table's order)."""
    return {name: tissues[name] * float(rng.uniform(1 - TISSUE_JITTER, 1 + TISSUE_JITTER))
            for name in sorted(tissues)}


# ----------------------------------------------------------------------------------------------------
# Knee (right knee; joint line at z = 0; femur up, tibia and fibula down, patella anterior)
# ----------------------------------------------------------------------------------------------------

def _knee(P: np.ndarray, rng: np.random.Generator, t: dict, pix: float) -> np.ndarray:
    """Magnitude of the knee model at anatomical points P (..., 3); `pix` is the pixel size in mm."""
    w = 0.45 * pix
    j = lambda v, rel=0.08: v * rng.uniform(1 - rel, 1 + rel)  # noqa: E731  per-subject jitter
    tex = _subject_texture(rng)
    x, y, z = P[..., 0], P[..., 1], P[..., 2]
    cv = _Canvas(P.shape[:-1])
    fat_mm, cart, gap = rng.uniform(4, 12), rng.uniform(1.8, 2.8), rng.uniform(0.3, 1.4)
    effusion = rng.uniform(0.3, 1.0)

    # --- soft tissue: skin, subcutaneous fat, muscles with fat septa (little muscle at the joint line) ---
    flare = 1 + 0.12 * np.tanh(z / F32(60))  # thigh wider than calf
    leg = _ellipse(x, y, 0, -4, j(52) * flare, j(47) * flare)
    cv.paint(_fill(leg, w), t["skin"])
    cv.paint(_fill(leg + 1.5, w), t["fat"] * (1 + 0.04 * tex(P, 12, pix)))
    S, dS = _texture(P, rng, 45, 0.0, stretch=(1, 1, 3), gradient=True)  # septa: zero surface of S
    septa = _fill(np.abs(S) / np.maximum(np.linalg.norm(dS, axis=-1), F32(1e-3)) - F32(0.6), w)
    away_from_joint = np.maximum(1 - _fill(np.abs(z) - F32(j(20, 0.2)), 5), _fill(y + F32(28), 4))
    muscle = _fill(leg + F32(fat_mm), w) * away_from_joint * (1 - septa)
    cv.paint(muscle, t["muscle"] * (1 + 0.06 * tex(P, 5, pix, stretch=(1, 1, 4))))

    # --- bones as distances: trumpet-shaped metaphyses flaring into condyles and plateau ---
    cond_z = 12.0
    med = _ellipsoid(P, (-j(19, 0.05), -6, cond_z), (j(15), j(29), 14))
    lat = _ellipsoid(P, (j(19, 0.05), -6, cond_z), (j(14), j(28), 14))
    troch = _ellipsoid(P, (0, 12, 18), (j(28), 12, 16))
    condyles = np.minimum(np.minimum(med, lat), troch)
    notch = _ellipsoid(P, (0, -20, 2), (j(8, 0.15), 20, 13))
    rf = np.exp(-np.maximum(z - F32(cond_z), 0) / F32(j(16)))
    metaphysis_f = np.maximum(_ellipse(x, y, 0, -4, 13 + 22 * rf, 12 + 14 * rf), F32(cond_z) - z)
    femur = np.maximum(np.minimum(metaphysis_f, condyles), -notch)

    top = -2.0 - 2 * cart - gap  # tibial bone surface, below the femoral condyles and both cartilages
    rt = np.exp(-np.maximum(F32(top - 6) - z, 0) / F32(j(14)))
    tibia = np.maximum(_ellipse(x, y, 0, -6, 13 + 24 * rt, 12 + 16 * rt), z - F32(top))
    spines = np.minimum(_ellipsoid(P, (-5, -6, top), (4, 7, 3.5)), _ellipsoid(P, (5, -6, top), (4, 7, 3.5)))
    tibia = np.minimum(tibia, spines)
    fib_z = top - 24
    fibula = np.minimum(_ellipsoid(P, (32, -20, fib_z), (8, 8, 10)),
                        np.maximum(_ellipse(x, y, 31, -20, 6.5, 6.5), z - F32(fib_z - 3)))
    pz = rng.uniform(14, 24)
    patella = _ellipsoid(P, (0, 38, pz), (j(20), j(9), j(21)))

    # --- joint fluid, bursa, vessels, tendons, ligaments, menisci (the bones cover them) ---
    cv.paint(effusion * _fill(_ellipsoid(P, (0, -4, top + cart + gap / 2), (38, 28, 4)), w), t["fluid"])
    cv.paint(effusion * _fill(_ellipsoid(P, (0, 25, pz + 28), (22, 3.5, 14)), w), t["fluid"])
    cv.paint(_fill(_ellipse(x, y, -3, -38, 3.5, 3.5), w), t["artery"])
    cv.paint(_fill(_ellipse(x, y, 6, -42, 4.5, 4.5), w), t["vein"])
    tendons = np.minimum(_ellipsoid(P, (0, 36, pz - 40), (13, 3.5, 22)), _ellipsoid(P, (0, 32, pz + 40), (16, 4, 22)))
    cv.paint(_fill(tendons, w), t["tendon"])
    ligaments = np.minimum.reduce([
        _segment(P, (6, -18, 6), (2, 8, top - 0.5), 3.5),            # ACL
        _segment(P, (-6, -8, 8), (-2, -26, top - 4), 3.5),           # PCL
        _segment(P, (-38, -6, 26), (-37, -6, top - 30), 1.8),        # MCL
        _segment(P, (38, -10, 18), (35, -20, fib_z + 9), 1.8),       # LCL
    ])
    cv.paint(_fill(ligaments, w), t["ligament"])
    zt = top + cart  # menisci: wedges on the tibial cartilage, thick at the rim, thin inside
    for xc in (-19.0, 19.0):
        rho = np.sqrt(((x - F32(xc)) / F32(17)) ** 2 + ((y + F32(6)) / F32(27)) ** 2)
        height = F32(6) * np.clip((rho - F32(0.55)) / F32(0.45), 0, 1)
        wedge = np.maximum.reduce([F32(zt) - z, z - F32(zt) - height, (rho - F32(1.02)) * 15, (F32(0.55) - rho) * 15])
        cv.paint(_fill(wedge, w), t["meniscus"])

    # --- marrow with trabecular texture and physeal scars, then cortex, then cartilage ---
    trab = 1 + 0.12 * np.tanh(1.5 * tex(P, 2.5, pix))
    wobble = 1.5 * _texture(P, rng, 20, pix)
    scar = 1 - 0.45 * (_fill(np.abs(z - F32(cond_z + 20) - wobble) - F32(0.7), w)
                       + _fill(np.abs(z - F32(top - 16) - wobble) - F32(0.7), w))
    cortex_mm = rng.uniform(0.9, 1.4) + 2.5 * _fill(F32(45) - np.abs(z), 6)  # thick in the shafts
    for bone in (femur, tibia, fibula, patella):
        inside = _fill(bone, w)
        cv.paint(inside, t["marrow"] * trab * scar)
        cv.paint(inside - _fill(bone + cortex_mm, w), t["cortex"])
    fem_cart = _fill(condyles - F32(cart), w) * (1 - _fill(femur, w)) * np.maximum(
        _fill(z - F32(cond_z - 2), 2), _fill(F32(16) - y, 2) * _fill(z - F32(30), 2) * _fill(-notch, 2))
    tib_cart = (_fill(np.maximum(tibia - F32(cart), z - F32(zt)), w) * (1 - _fill(tibia, w))
                * _fill(F32(top - 2) - z, 1.0) * _fill(F32(8) - np.abs(x), 1.5))
    pat_cart = _fill(patella - F32(2.5), w) * (1 - _fill(patella, w)) * _fill(y - F32(36), 2)
    cart_tex = 1 + 0.05 * tex(P, 4, pix)
    for c in (fem_cart, tib_cart, pat_cart):
        cv.paint(c, t["cartilage"] * cart_tex)
    return cv.img


def knee2d(rng: np.random.Generator, slices: int, shape: tuple[int, int] = (64, 64),
           acquisition: str = "CORPD_FBK", fov_mm: float = KNEE_FOV_MM) -> np.ndarray:
    """Coronal knee stack (slices, H, W) complex64: rows superior->inferior, slices posterior->anterior."""
    t = _contrast(KNEE_TISSUES, _KNEE_CONTRAST, acquisition, "knee", rng)
    spacing = slice_spacing_mm("knee2d", slices)
    P = _stack_grid(slices, shape, fov_mm, spacing, "coronal")
    P = _place(P, rng, max_deg=(5, 8, 10), max_shift_mm=(8, 8, 12), scale_range=(0.88, 1.12), center=(0, -6, 0))
    if rng.random() < 0.5:  # left or right knee
        P[..., 0] *= -1
    mag = _knee(P, rng, t, fov_mm / max(shape)) * _fine_texture(P, rng, fov_mm / max(shape))
    return _complex(mag, stack_phase(rng, slices, shape))


def knee3d(rng: np.random.Generator, shape: tuple[int, int, int] = (32, 64, 48),
           acquisition: str = "3D-FSE", voxel_mm: float | None = None) -> np.ndarray:
    """Sagittal 3D knee volume (X, Y, Z) complex64: X = superior->inferior (readout), Y = anterior->posterior
    (phase encode), Z = left-right (slice encode). Voxels are isotropic, by default sized so that the larger
    phase-encode axis spans KNEE3D_FOV_MM; a short X then covers a slab around the joint line."""
    t = _contrast(KNEE_TISSUES, _KNEE_CONTRAST, acquisition, "knee", rng)
    vox = voxel_mm if voxel_mm is not None else KNEE3D_FOV_MM / max(shape[1], shape[2])
    X, Y, Z = shape
    zz, yy, xx = np.meshgrid(((X // 2) - np.arange(X)) * vox, ((Y // 2) - np.arange(Y)) * vox,
                             (np.arange(Z) - Z // 2) * vox, indexing="ij")
    P = np.stack([xx, yy, zz], -1).astype(F32)
    P = _place(P, rng, max_deg=(6, 6, 10), max_shift_mm=(6, 8, 10), scale_range=(0.88, 1.12), center=(0, -6, 0))
    if rng.random() < 0.5:
        P[..., 0] *= -1
    mag = _knee(P, rng, t, vox) * _fine_texture(P, rng, vox)
    return _complex(mag, smooth_phase(rng, shape))


# ----------------------------------------------------------------------------------------------------
# Brain (axial; z = 0 at the level of the third ventricle)
# ----------------------------------------------------------------------------------------------------

def _brain(P: np.ndarray, rng: np.random.Generator, t: dict, pix: float) -> np.ndarray:
    """Magnitude of the head model at anatomical points P (..., 3)."""
    w = 0.45 * pix
    j = lambda v, rel=0.08: v * rng.uniform(1 - rel, 1 + rel)  # noqa: E731
    tex = _subject_texture(rng)
    x = P[..., 0]
    cv = _Canvas(P.shape[:-1])

    # scalp, skull (dark tables around the diploe), subarachnoid CSF
    head = _ellipsoid(P, (0, -5, -5), (j(72), j(92), j(90)))
    scalp, skull, csf_mm = rng.uniform(4, 7), rng.uniform(5, 8), rng.uniform(1.2, 3.5)
    cv.paint(_fill(head, w), t["scalp"] * (1 + 0.05 * tex(P, 8, pix)))
    inner_skull = head + F32(scalp + skull)
    cv.paint(_fill(head + F32(scalp), w), t["skull"])
    # diploe between the outer and inner tables, each 1.6 mm of dark cortical bone (the inner table lies
    # outside the inner skull surface: `inner_skull - 1.6`, as `_template_head`'s shells)
    cv.paint(_fill(head + F32(scalp + 1.6), w) - _fill(inner_skull - F32(1.6), w),
             t["diploe"] * (1 + 0.1 * tex(P, 4, pix)))
    cv.paint(_fill(inner_skull, w), t["csf"])

    # cortex: sulci are the zero surface of a random field (distance ~ |G| / |grad G|), reaching a varying
    # depth below the brain surface; grey matter lines the surface and both banks of every sulcus
    brain = inner_skull + F32(csf_mm)
    depth = -brain
    G, dG = _texture(P, rng, 24, 0.0, modes=48, gradient=True)
    d_sulcus = np.abs(G) / np.maximum(np.linalg.norm(dG, axis=-1), F32(1e-3))
    sulcal_depth = rng.uniform(12, 18) * (1 + 0.3 * np.tanh(_texture(P, rng, 40, pix)))
    gm, width = rng.uniform(2.5, 3.5), rng.uniform(0.5, 1.3)
    d_gm = np.minimum(depth - F32(gm), np.maximum(d_sulcus - F32(gm), depth - sulcal_depth - F32(gm)))
    in_brain = _fill(brain, w)
    cv.paint(in_brain, t["wm"] * (1 + 0.03 * tex(P, 10, pix)))
    cv.paint(in_brain * _fill(d_gm, w), t["gm"] * (1 + 0.05 * tex(P, 5, pix)))
    cv.paint(in_brain * _fill(np.maximum(d_sulcus - F32(width), depth - sulcal_depth), w), t["csf"])
    callosum = _ellipsoid(P, (0, -6, 14), (9, 40, 16))
    fissure = np.maximum(np.abs(x - F32(1.5) * _texture(P, rng, 30, pix)) - F32(1.2), -callosum)
    cv.paint(_fill(fissure, w) * in_brain, t["csf"])

    deep = []
    for sd in (-1.0, 1.0):
        deep += [_ellipsoid(P, (sd * 13, 12, 9), (5, 9, 8)),      # caudate head
                 _ellipsoid(P, (sd * 10, -12, 2), (9, 14, 9)),    # thalamus
                 _ellipsoid(P, (sd * 24, 2, 2), (5, 14, 10))]     # putamen
    cv.paint(_fill(np.minimum.reduce(deep), w), t["deep_gm"])

    v = rng.uniform(0.7, 1.5)  # ventricle size varies a lot between subjects
    vents = [_ellipsoid(P, (0, -4, -1), (1.5 * v, 14, 9))]     # third ventricle
    for sd in (-1.0, 1.0):
        vents += [_ellipsoid(P, (sd * 7 * v, -8, 14), (5 * v, 26, 6 * v), rot=_rotation(0, 0, sd * 10)),   # body
                  _ellipsoid(P, (sd * 10 * v, 18, 8), (5 * v, 12, 8), rot=_rotation(0, 0, -sd * 25)),     # frontal
                  _ellipsoid(P, (sd * 15 * v, -32, 6), (6 * v, 12, 8), rot=_rotation(0, 0, sd * 25))]     # atrium
    cv.paint(_fill(np.minimum.reduce(vents), w), t["csf"])
    return cv.img


def brain2d(rng: np.random.Generator, slices: int, shape: tuple[int, int] = (64, 64),
            acquisition: str = "AXT2", fov_mm: float = BRAIN_FOV_MM) -> np.ndarray:
    """Axial brain stack (slices, H, W) complex64: rows anterior->posterior, slices inferior->superior."""
    t = _contrast(BRAIN_TISSUES, _BRAIN_CONTRAST, acquisition, "brain", rng)
    spacing = slice_spacing_mm("brain2d", slices)
    P = _stack_grid(slices, shape, fov_mm, spacing, "axial")
    P = _place(P, rng, max_deg=(4, 4, 8), max_shift_mm=(8, 10, 8), scale_range=(0.9, 1.1), center=(0, -5, 22))
    mag = _brain(P, rng, t, fov_mm / max(shape)) * _fine_texture(P, rng, fov_mm / max(shape))
    return _complex(mag, stack_phase(rng, slices, shape))


# ----------------------------------------------------------------------------------------------------
# Brain from the MNI ICBM152 2009a template (real anatomy; read from the installed nilearn package)
# ----------------------------------------------------------------------------------------------------

# The template, its grey and white matter probability maps (1 mm, MNI space: x right, y anterior,
# z superior), as nilearn redistributes them inside its wheel (Fonov et al., NeuroImage 2011).
MNI152_FILES = {name: f"mni_icbm152_{name}_tal_nlin_sym_09a_converted.nii.gz" for name in ("t1", "gm", "wm")}
_MNI_STEP = 2  # grid step (mm) of the head distance map: it is smooth, a coarse grid keeps memory small


class MNI152(NamedTuple):
    """The template as the phantom needs it. gm, wm: uint8 probabilities x 255 on the 1 mm grid;
    to_voxel: 4x4 map from MNI mm to that grid's indices; skull: signed distance (mm, negative inside)
    to the inner skull surface on a `_MNI_STEP` mm grid, whose indices are (1 mm index - skull_offset) / step."""
    gm: np.ndarray
    wm: np.ndarray
    to_voxel: np.ndarray
    skull: np.ndarray
    skull_offset: float


def mni152_folder() -> Path:
    """The folder of the template files inside the installed nilearn package (nilearn is not imported)."""
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("--anatomy mni152 reads the MNI ICBM152 2009a template shipped in the nilearn "
                                  "package, which is not installed: pip install -r requirements.txt")
    folder = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"
    missing = [name for name in MNI152_FILES.values() if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"--anatomy mni152: {folder} lacks {', '.join(missing)} (nilearn version without "
                                "the bundled MNI152 2009a template?)")
    return folder


@functools.lru_cache(maxsize=1)
def mni152() -> MNI152:
    """Load the template once per process (about 2 s). The inner skull surface is the brain mask (non-zero
    skull-stripped T1, or any tissue) smoothed over ~4 mm, so that it bridges the sulci as the skull does;
    CSF is everything inside it that is neither grey nor white matter."""
    import nibabel as nib
    from scipy import ndimage

    folder = mni152_folder()
    imgs = {name: nib.load(folder / f) for name, f in MNI152_FILES.items()}
    affine = imgs["t1"].affine
    vols = {name: np.asarray(img.dataobj) for name, img in imgs.items()}
    if any(v.shape != vols["t1"].shape or v.dtype != np.uint8 for v in vols.values()) or \
            not all(np.allclose(img.affine, affine) for img in imgs.values()):
        raise ValueError(f"{folder}: the MNI152 files do not share one uint8 grid")
    brain = (vols["t1"] > 0) | (vols["gm"].astype(np.int16) + vols["wm"] > 12)
    n = [d // _MNI_STEP for d in brain.shape]
    coarse = brain[:n[0] * _MNI_STEP, :n[1] * _MNI_STEP, :n[2] * _MNI_STEP].reshape(
        n[0], _MNI_STEP, n[1], _MNI_STEP, n[2], _MNI_STEP).mean((1, 3, 5), dtype=np.float32)
    pad = 40 // _MNI_STEP  # room for the skull and scalp outside the template's box
    inside = ndimage.binary_fill_holes(np.pad(ndimage.gaussian_filter(coarse, 4.0 / _MNI_STEP) > 0.3, pad))
    skull = _MNI_STEP * (ndimage.distance_transform_edt(~inside) - ndimage.distance_transform_edt(inside))
    return MNI152(vols["gm"], vols["wm"], np.linalg.inv(affine), skull.astype(F32),
                  skull_offset=(_MNI_STEP - 1) / 2 - pad * _MNI_STEP)


def _sample(volume: np.ndarray, idx: np.ndarray, cval: float = 0.0) -> np.ndarray:
    """Trilinear samples of `volume` at fractional indices idx (3, ...), cval outside."""
    from scipy import ndimage

    out = ndimage.map_coordinates(volume, idx.reshape(3, -1), order=1, mode="constant", cval=cval,
                                  output=np.float32)
    return out.reshape(idx.shape[1:])


def brain2d_mni152(rng: np.random.Generator, slices: int, shape: tuple[int, int] = (64, 64),
                   acquisition: str = "AXT2", fov_mm: float = BRAIN_FOV_MM) -> tuple[np.ndarray, np.ndarray]:
    """Axial brain stack (slices, H, W) complex64 drawn from the MNI152 template, and the 4x4 affine from
    (slice, row, col) indices to MNI mm. A random slab (centre z uniform in [5, 40] mm MNI: basal ganglia
    to centrum semiovale) under a random rigid transform with +-10% scaling; each voxel averages 2x2
    in-plane x 3 through-slice samples (partial volume over the slice thickness). Tissue signal: the
    protocol's BRAIN_TISSUES (jittered) weighted by the GM, WM and CSF (= inside the skull minus GM minus
    WM) fractions; skull (tables and diploe) and scalp are shells of random thickness around the inner
    skull surface (the template is skull-stripped). Phase, textures and fine grain as `brain2d`."""
    t = _contrast(BRAIN_TISSUES, _BRAIN_CONTRAST, acquisition, "brain", rng)
    tex = _subject_texture(rng)
    slab = _mni_slab(rng, slices, shape, fov_mm)
    mag = _template_head(rng, slab, t, tex) * _fine_texture(slab.A, rng, slab.pix)
    return _complex(mag, stack_phase(rng, slices, shape)), slab.affine


class _Slab(NamedTuple):
    """A stack's voxel centres in MNI mm (A: (slices, H, W, 3)), the offsets of its partial-volume samples
    (sub: (n, 3) mm), pixel size and slice spacing (mm), and the (slice, row, col, 1) -> MNI mm affine."""
    A: np.ndarray
    sub: np.ndarray
    pix: float
    spacing: float
    affine: np.ndarray


def _mni_slab(rng: np.random.Generator, slices: int, shape: tuple[int, int], fov_mm: float) -> _Slab:
    """A random axial slab of MNI space: centre z uniform in [5, 40] mm, rigid transform with +-10% scaling."""
    spacing, pix = slice_spacing_mm("brain2d", slices), fov_mm / max(shape)
    P = _stack_grid(slices, shape, fov_mm, spacing, "axial")
    M, shift = _placement(rng, max_deg=(6, 6, 10), max_shift_mm=(5, 8, 0), scale_range=(0.9, 1.1),
                          center=(0.0, -18.0, rng.uniform(5.0, 40.0)))
    A = P @ M + shift  # MNI mm of the voxel centres
    sub = np.array([(dx, dy, dz) for dx in (-pix / 4, pix / 4) for dy in (-pix / 4, pix / 4)
                    for dz in (-spacing / 3, 0.0, spacing / 3)], F32) @ M
    steps = np.array([[0, 0, spacing], [0, -pix, 0], [pix, 0, 0]], np.float64) @ M  # (slice, row, col) steps
    affine = np.eye(4)
    affine[:3, :3], affine[:3, 3] = steps.T, A[0, 0, 0]
    return _Slab(A, sub, pix, spacing, affine)


def _template_head(rng: np.random.Generator, slab: _Slab, t: dict, tex, displacement=None) -> np.ndarray:
    """Magnitude of the template head at the slab's voxels, tissues looked up at MNI mm + `displacement`
    (slices, H, W, 3) of a deformation at the voxel centres (its sub-voxel change is neglected), or none:
    GM / WM fractions averaged over the partial-volume samples, CSF = inside the skull minus both, skull and
    scalp shells around the (warped) inner skull surface; textures move with the scanner grid (they are
    random anyway)."""
    template, A, pix = mni152(), slab.A, slab.pix
    to_vox = template.to_voxel.astype(F32)
    moved = A if displacement is None else A + displacement

    def index(points: np.ndarray) -> np.ndarray:
        return np.moveaxis(points @ to_vox[:3, :3].T + to_vox[:3, 3], -1, 0)

    frac = {"gm": 0.0, "wm": 0.0}
    for d in slab.sub:  # partial volume: mean tissue fractions over the voxel
        idx = index(moved + d)
        for name in frac:
            frac[name] = frac[name] + _sample(getattr(template, name), idx) / F32(255 * len(slab.sub))
    d_skull = _sample(template.skull, (index(moved) - F32(template.skull_offset)) / F32(_MNI_STEP), cval=1e3)
    d_skull = d_skull + F32(0.8) * _texture(A, rng, 40, pix)  # the skull is not a smoothed brain: let it wander

    w = 0.45 * pix
    skull, scalp = rng.uniform(5, 8), rng.uniform(4, 7)
    cv = _Canvas(A.shape[:-1])
    cv.paint(_fill(d_skull - F32(skull + scalp), w), t["scalp"] * (1 + 0.05 * tex(A, 8, pix)))
    cv.paint(_fill(d_skull - F32(skull), w), t["skull"])
    cv.paint(_fill(d_skull - F32(skull - 1.6), w) - _fill(d_skull - F32(1.6), w),
             t["diploe"] * (1 + 0.1 * tex(A, 4, pix)))
    inside = _fill(d_skull, w)
    gm, wm = frac["gm"], frac["wm"]
    csf = np.clip(inside - gm - wm, 0, 1)
    brain = (wm * t["wm"] * (1 + 0.03 * tex(A, 10, pix)) + gm * t["gm"] * (1 + 0.05 * tex(A, 5, pix))
             + csf * t["csf"])
    return cv.img * (1 - inside) + brain


# ----------------------------------------------------------------------------------------------------
# Brains synthesised from the template (domain randomisation, as SynthSeg does for segmentation:
# Billot et al., Medical Image Analysis 2023): every volume a new anatomy and a new contrast
# ----------------------------------------------------------------------------------------------------

# Random contrast: each tissue's signal uniform in SYNTH_INTENSITY, independently (T1-, T2-, PD-, FLAIR-like
# orderings and every other one); cortical bone has no signal on any sequence: uniform in SYNTH_BONE.
SYNTH_TISSUES = ("wm", "gm", "csf", "scalp", "diploe")
SYNTH_INTENSITY, SYNTH_BONE = (0.05, 1.0), (0.0, 0.08)
# Physical contrast (`physics_intensities`), drawn for a fraction SYNTH_PHYSICS of the volumes (the rest:
# the uniform draws above): each tissue's T1 (ms), T2 (ms) and proton density uniform in these ranges (brain
# tissue at 1.5 T to 3 T, Stanisz et al., MRM 2005; CSF near free water; scalp = subcutaneous fat, diploe =
# fatty marrow), imaged by a random sequence of SYNTH_SEQUENCES with the usual signal equations.
SYNTH_PHYSICS = 0.5
SYNTH_RELAXATION = {  # tissue: ((T1 min, max), (T2 min, max), (PD min, max))
    "wm": ((750.0, 1100.0), (65.0, 85.0), (0.65, 0.75)),
    "gm": ((1100.0, 1850.0), (85.0, 110.0), (0.78, 0.88)),
    "csf": ((3500.0, 4500.0), (1200.0, 2000.0), (0.97, 1.0)),
    "scalp": ((250.0, 400.0), (60.0, 130.0), (0.85, 1.0)),
    "diploe": ((300.0, 550.0), (50.0, 100.0), (0.6, 0.9)),
}
# Sequences, equally likely (times in ms): spin echo over the T1-/PD-/T2-weighted plane, FLAIR (inversion
# nulling CSF +-10%), spoiled gradient echo (3D T1-weighted to PD-weighted by its flip angle), gradient-echo
# EPI; T2* = T2 x 0.5-0.8 for the gradient echoes. Fat suppression (scalp and diploe x SYNTH_FAT_SAT) with
# probability 0.5 for EPI, 0.2 otherwise.
SYNTH_SEQUENCES = ("spin_echo", "flair", "spoiled_gre", "epi")
SYNTH_FAT_SAT = (0.02, 0.2)
# Deformation (stationary velocity field, `deformation`): the largest velocity of a coarse field (shape,
# correlation SYNTH_COARSE_MM) and of a fine one (cortical folding position, SYNTH_FINE_MM), in mm, and the
# ventricles' linear size factor, log-uniform (at their centre).
SYNTH_COARSE_MM, SYNTH_COARSE_MAX = 20.0, (0.0, 12.0)
SYNTH_FINE_MM, SYNTH_FINE_MAX = 6.0, (0.0, 3.0)
SYNTH_VENTRICLES = (0.7, 1.6)
_VENTRICLE_CENTRE, _VENTRICLE_RADII = (0.0, -10.0, 15.0), (22.0, 38.0, 18.0)  # MNI mm, lateral ventricles (a node)
# The velocity grid (MNI mm): the template's head with its scalp in x and y, z over every slab `_mni_slab`
# draws (centre 5-40 mm, 60 mm stacks, tilted), 5 mm nodes.
_SVF_ORIGIN, _SVF_SHAPE, _SVF_STEP = np.array([-105.0, -140.0, -60.0], F32), (43, 51, 36), 5.0
# Bias field: exp of a smooth random field, within [1 / b, b] with b uniform in [1, SYNTH_BIAS_MAX];
# in-plane resolution: Gaussian blur of std uniform in [0, SYNTH_BLUR_PX] pixels per axis.
SYNTH_BIAS_MAX, SYNTH_BIAS_MM = 1.5, 160.0
SYNTH_BLUR_PX = 1.0


def synth_deformation(rng: np.random.Generator, draw: dict) -> Deformation:
    """A random diffeomorphism of MNI space (coarse + fine smooth fields and a ventricle scaling, one
    stationary velocity field exponentiated); its parameters go into `draw`."""
    coarse = float(rng.uniform(*SYNTH_COARSE_MAX))
    fine = float(rng.uniform(*SYNTH_FINE_MAX))
    vents = float(np.exp(rng.uniform(*np.log(SYNTH_VENTRICLES))))
    v = (F32(coarse) * random_field(rng, _SVF_SHAPE, _SVF_STEP, SYNTH_COARSE_MM)
         + F32(fine) * random_field(rng, _SVF_SHAPE, _SVF_STEP, SYNTH_FINE_MM)
         # phi pulls the template: scaling it by 1/s around the ventricles shows them s times larger
         + local_scaling(_SVF_SHAPE, _SVF_ORIGIN, _SVF_STEP, _VENTRICLE_CENTRE, _VENTRICLE_RADII,
                                     -np.log(vents)))
    v *= taper(_SVF_SHAPE, 3)
    draw.update(coarse_mm=coarse, fine_mm=fine, ventricle_scale=vents)
    return exponentiate(v, _SVF_ORIGIN, _SVF_STEP, squarings=5)


def synth_intensities(rng: np.random.Generator) -> dict:
    """Random tissue signals (SYNTH_INTENSITY; bone SYNTH_BONE), independent per tissue."""
    t = {name: float(rng.uniform(*SYNTH_INTENSITY)) for name in SYNTH_TISSUES}
    t["skull"] = float(rng.uniform(*SYNTH_BONE))
    return t


def _sequence(rng: np.random.Generator) -> dict:
    """A random sequence of SYNTH_SEQUENCES: its name and timings (ms); TI of FLAIR is set per volume in
    `physics_intensities` (from its CSF T1)."""
    name = str(rng.choice(SYNTH_SEQUENCES))
    if name == "spin_echo":
        seq = dict(tr=float(np.exp(rng.uniform(np.log(300.0), np.log(5000.0)))), te=float(rng.uniform(5.0, 120.0)))
    elif name == "flair":
        seq = dict(tr=float(rng.uniform(6000.0, 11000.0)), te=float(rng.uniform(80.0, 140.0)),
                   null_error=float(rng.uniform(0.9, 1.1)))
    elif name == "spoiled_gre":
        seq = dict(tr=float(rng.uniform(8.0, 30.0)), te=float(rng.uniform(3.0, 10.0)),
                   flip_deg=float(rng.uniform(5.0, 40.0)), t2star=float(rng.uniform(0.5, 0.8)))
    else:
        seq = dict(tr=float(rng.uniform(1500.0, 4000.0)), te=float(rng.uniform(20.0, 50.0)),
                   t2star=float(rng.uniform(0.5, 0.8)))
    seq["fat_sat"] = bool(rng.uniform() < (0.5 if name == "epi" else 0.2))
    return {"sequence": name, **seq}


def sequence_signal(seq: dict, t1: float, t2: float, pd: float) -> float:
    """Signal of a tissue (T1, T2 in ms, proton density) in sequence `seq` (`_sequence`; `ti` set for FLAIR).
    With E1 = exp(-TR/T1) and E2 = exp(-TE/T2) (T2 x `t2star` for the gradient echoes): spin echo and EPI
    PD (1 - E1) E2; inversion recovery PD |1 - 2 exp(-TI/T1) + E1| E2 (a magnitude image); spoiled gradient
    echo of flip a PD sin(a) (1 - E1) / (1 - cos(a) E1) E2 (Ernst's steady state)."""
    e1, e2 = np.exp(-seq["tr"] / t1), np.exp(-seq["te"] / (t2 * seq.get("t2star", 1.0)))
    if "ti" in seq:
        return float(pd * abs(1 - 2 * np.exp(-seq["ti"] / t1) + e1) * e2)
    if "flip_deg" in seq:
        a = np.deg2rad(seq["flip_deg"])
        return float(pd * np.sin(a) * (1 - e1) / (1 - np.cos(a) * e1) * e2)
    return float(pd * (1 - e1) * e2)


def physics_intensities(rng: np.random.Generator, draw: dict) -> dict:
    """Tissue signals (`sequence_signal`) of a random sequence (`_sequence`) on tissues of random relaxation
    times (SYNTH_RELAXATION), scaled so that the brightest tissue is 1; fat-suppressed scalp and diploe x
    SYNTH_FAT_SAT; bone SYNTH_BONE. The sequence, its timings and fat factor go into `draw["sequence"]`, each
    tissue's (T1, T2, PD) into `draw["relaxation"]`."""
    tissue = {name: tuple(float(rng.uniform(*r)) for r in SYNTH_RELAXATION[name]) for name in SYNTH_TISSUES}
    seq = _sequence(rng)
    tr = seq["tr"]
    if seq["sequence"] == "flair":  # the inversion time that nulls this CSF, off by null_error
        t1_csf = tissue["csf"][0]
        seq["ti"] = float(seq.pop("null_error") * t1_csf * np.log(2.0 / (1.0 + np.exp(-tr / t1_csf))))
    signal = {name: sequence_signal(seq, *tissue[name]) for name in SYNTH_TISSUES}
    seq["fat_factor"] = float(rng.uniform(*SYNTH_FAT_SAT)) if seq["fat_sat"] else 1.0
    for name in ("scalp", "diploe"):
        signal[name] *= seq["fat_factor"]
    top = max(signal.values())
    t = {name: float(v / top) for name, v in signal.items()}
    t["skull"] = float(rng.uniform(*SYNTH_BONE))
    draw.update(sequence=seq, relaxation={name: list(tissue[name]) for name in SYNTH_TISSUES})
    return t


def synth_contrast(rng: np.random.Generator, draw: dict) -> dict:
    """This volume's tissue signals: physical (`physics_intensities`) with probability SYNTH_PHYSICS, else
    independent uniform draws (`synth_intensities`, SynthSeg's); `draw["contrast"]` says which."""
    if rng.uniform() < SYNTH_PHYSICS:
        draw["contrast"] = "physics"
        return physics_intensities(rng, draw)
    draw["contrast"] = "random"
    return synth_intensities(rng)


def bias_field(rng: np.random.Generator, A: np.ndarray, pix: float, draw: dict) -> np.ndarray:
    """Smooth multiplicative field over the stack (transmit inhomogeneity), within [1/b, b]."""
    b = float(rng.uniform(1.0, SYNTH_BIAS_MAX))
    field = _texture(A, rng, SYNTH_BIAS_MM, pix, modes=8)
    draw["bias_max"] = b
    return np.exp(F32(np.log(b)) * field / F32(max(np.abs(field).max(), 1e-6))).astype(F32)


def brain2d_synth(rng: np.random.Generator, slices: int, shape: tuple[int, int] = (64, 64),
                  acquisition: str = "AXT2", fov_mm: float = BRAIN_FOV_MM, deform: bool = True,
                  random_contrast: bool = True) -> tuple[np.ndarray, np.ndarray, dict]:
    """Axial stack (slices, H, W) complex64 of a new brain drawn from the MNI152 template's tissue maps,
    the 4x4 affine of its slab in MNI mm (before the deformation), and what was drawn (a dict).

    As `brain2d_mni152` (slab, rigid transform with +-10% scaling, partial volume, skull and scalp shells),
    plus: the template warped by a random diffeomorphism (`synth_deformation`; `deform`), tissue signals
    drawn at random (`synth_contrast`: physical or uniform; without `random_contrast`, the protocol's table
    jittered as `brain2d_mni152` does), a bias field (`bias_field`) and an in-plane blur (random resolution)."""
    from scipy import ndimage

    draw: dict = {"deformed": bool(deform), "contrast": "protocol"}
    t = synth_contrast(rng, draw) if random_contrast else _contrast(BRAIN_TISSUES, _BRAIN_CONTRAST, acquisition,
                                                                     "brain", rng)
    draw["intensities"] = {k: float(v) for k, v in t.items()}
    tex = _subject_texture(rng)
    slab = _mni_slab(rng, slices, shape, fov_mm)
    displacement = synth_deformation(rng, draw).displacement_at(slab.A) if deform else None
    mag = _template_head(rng, slab, t, tex, displacement) * bias_field(rng, slab.A, slab.pix, draw)
    blur = rng.uniform(0.0, SYNTH_BLUR_PX, 2)
    draw["blur_px"] = [float(b) for b in blur]
    mag = ndimage.gaussian_filter(mag, (0.0, *blur), mode="constant", truncate=3.0)
    mag = mag * _fine_texture(slab.A, rng, slab.pix)
    return _complex(mag, stack_phase(rng, slices, shape)), slab.affine, draw


# ----------------------------------------------------------------------------------------------------
# Cardiac cine (short-axis slices from base to apex; frames over the cardiac cycle)
# ----------------------------------------------------------------------------------------------------

def contraction(phase: np.ndarray, systole: float = 0.35) -> np.ndarray:
    """Periodic contraction curve in [0, 1] over the cardiac phase in cycles: 0 at end-diastole (phase 0),
    1 at end-systole (`systole`), faster ejection than filling; continuous with a continuous derivative."""
    ph = np.mod(phase, 1.0)
    warped = np.where(ph < systole, ph / (2 * systole), 0.5 + (ph - systole) / (2 * (1 - systole)))
    return (0.5 * (1 - np.cos(2 * np.pi * warped))).astype(F32)


def _disc(x, y, cx, cy, r) -> np.ndarray:
    return np.sqrt((x - cx) ** 2 + (y - cy) ** 2) - r


def _cine(P: np.ndarray, s: np.ndarray, levels: np.ndarray, rng: np.random.Generator, t: dict,
          pix: float) -> np.ndarray:
    """Magnitude (slices, frames, H, W) for points P (slices, 1, H, W, 3), contraction s (frames,) in [0, 1]
    and long-axis levels (slices,) from base 0 to apex 1."""
    w = 0.45 * pix
    j = lambda v, rel=0.08: v * rng.uniform(1 - rel, 1 + rel)  # noqa: E731
    tex = _subject_texture(rng)
    x, y = P[..., 0], P[..., 1]
    cv = _Canvas((P.shape[0], len(s)) + P.shape[2:4])
    s = s[None, :, None, None]
    lv = levels[:, None, None, None]

    # static anatomy: body wall, lungs with vessels, spine, aorta, liver (rises into the apical slices)
    body = _ellipsoid(P, (0, 0, 0), (j(165), j(112), 1e5), p=2.3)
    fat_mm, wall_mm = rng.uniform(8, 22), rng.uniform(10, 16)
    cv.paint(_fill(body, w), t["fat"])
    cv.paint(_fill(body + F32(fat_mm), w), t["muscle"] * (1 + 0.06 * tex(P, 6, pix)))
    cv.paint(_fill(body + F32(fat_mm + wall_mm), w), t["soft"])
    vessels = _fill(F32(2.0) - _texture(P, rng, 9, pix), w)
    lungs = np.minimum(_ellipsoid(P, (-78, 2, 0), (j(60), j(82), 1e5)), _ellipsoid(P, (82, 0, 0), (j(55), j(80), 1e5)))
    hx, hy = j(30, 0.2), j(18, 0.3)  # heart centre: left and anterior of the body centre
    r_lv = j(24) * np.sqrt(np.clip(1 - lv ** 2, 0.1, 1))  # end-diastolic LV cavity radius, smaller to the apex
    myo = j(9)
    lv_out_ed = _disc(x, y, hx, hy, r_lv + myo)
    rv_cx, rv_cy = hx - 0.9 * r_lv, hy + 0.35 * r_lv
    rv_ed = _ellipse(x, y, rv_cx, rv_cy, 1.5 * r_lv + 3, 1.15 * r_lv + 3)
    heart_ed = np.minimum(lv_out_ed, rv_ed)
    pericardium = heart_ed - F32(rng.uniform(3, 7))  # epicardial fat, static; the heart contracts inside it
    cv.paint(_fill(np.maximum(lungs, -(pericardium - 4)), w), t["lung"] + (t["soft"] - t["lung"]) * vessels)
    cv.paint(_fill(pericardium, w), t["fat"])
    spine = _disc(x, y, 0, -75, j(17))
    cv.paint(_fill(spine, w), t["marrow"] * (1 + 0.1 * tex(P, 4, pix)))
    cv.paint(_fill(spine, w) - _fill(spine + 2, w), t["cortex"])
    cv.paint(_fill(_disc(x, y, 0, -101, 7), w), t["csf"])
    cv.paint(_fill(_disc(x, y, 22, -52, j(11)), w), t["blood"])  # descending aorta
    cv.paint(_fill(_ellipsoid(P, (-80, -25, 0), (55, 45, 1e5)) + F32(40) * (1 - lv), w), t["liver"])

    # moving heart: the LV cavity shrinks, its wall thickens at constant area; the RV crescent shrinks
    eject = rng.uniform(0.26, 0.38)
    r_endo = r_lv * (1 - eject * s)
    r_epi = np.sqrt(r_endo ** 2 + (r_lv + myo) ** 2 - r_lv ** 2)
    lv_endo, lv_epi = _disc(x, y, hx, hy, r_endo), _disc(x, y, hx, hy, r_epi)
    k = 1 - 0.7 * eject * s
    rv_out = _ellipse(x, y, hx + (rv_cx - hx) * k, rv_cy, (1.5 * r_lv + 3) * k, (1.15 * r_lv + 3) * k)
    cv.paint(_fill(np.minimum(lv_epi, rv_out), w), t["myocardium"] * (1 + 0.04 * tex(P, 5, pix)))
    cv.paint(_fill(np.maximum(rv_out + 3, -(lv_epi)), w), t["blood"])
    cv.paint(_fill(lv_endo, w), t["blood"] * (1 + 0.03 * tex(P, 6, pix)))
    for ang in np.deg2rad([-40.0, -140.0]):  # papillary muscles ride on the posterior wall
        rr = 0.7 * r_endo
        cv.paint(_fill(_disc(x, y, hx + rr * np.cos(ang), hy + rr * np.sin(ang), 0.17 * r_lv * (1 + 0.6 * s)), w),
                 t["myocardium"])
    return cv.img


def cine(rng: np.random.Generator, slices: int, frames: int, shape: tuple[int, int] = (64, 64),
         fov_mm: float = CINE_FOV_MM, cycles: float = 1.0) -> np.ndarray:
    """Short-axis cine (slices, frames, H, W) complex64; the frames cover `cycles` cardiac cycles starting at
    end-diastole, so with cycles=1 frame k and frame k + frames would be identical."""
    H, W = shape
    pix = fov_mm / max(H, W)
    rows = ((H // 2) - np.arange(H)) * pix
    cols = (np.arange(W) - (W // 2)) * pix
    P = np.zeros((slices, 1, H, W, 3), F32)
    P[..., 0] = cols
    P[..., 1] = rows[:, None]
    P[..., 2] = (np.arange(slices) * 10.0)[:, None, None, None]  # 10 mm between slices, for the textures
    P = _place(P, rng, max_deg=(0, 0, 12), max_shift_mm=(10, 10, 0), scale_range=(0.9, 1.1), center=(25, 10, 0))
    base = rng.uniform(0.05, 0.3)
    levels = np.linspace(base, base + min(0.6, 0.15 * (slices - 1)), slices) if slices > 1 else np.array([base + 0.2])
    s = contraction(np.arange(frames) * cycles / frames)
    mag = _cine(P, s, levels.astype(F32), rng, jitter_tissues(rng, CINE_TISSUES), pix)
    phase = stack_phase(rng, slices, shape)[:, None]  # static: the same for every frame
    return _complex(mag, phase)
