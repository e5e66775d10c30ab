"""Unrolled networks (PGD, MoDL) and the prox registry (resnet, unet)."""
from __future__ import annotations

import copy
import math

import pytest
import torch

from mrirecon.models import UnrolledNet, build_prox, register_prox, registered_prox
from mrirecon.models import registry
from mrirecon.models.prox import ResNetProx, NormBoundedConv, UNetProx
from mrirecon.models.prox.conv_norm import certified_conv_norm, certified_conv_norms
from mrirecon.models.unrolled import (gradient_step, gradient_step_inverse, modl_data_consistency,
                                      modl_data_consistency_inverse)
from mrirecon.physics import SenseOp
from problems import LAYOUTS, sense_problem


RESNET = {"name": "resnet", "channels": 8, "num_blocks": 2}
LIPSCHITZ_RESNET = {**RESNET, "lipschitz": 0.9}
UNET = {"name": "unet", "channels": 8, "num_blocks": 2}

def make_batch(layout: str, coils: int = 4, maps: int = 1, batch: int = 1, seed: int = 0):
    return sense_problem(layout, coils, maps, batch, seed)


def make_net(layout: str, dc: str = "pgd", prox=RESNET, num_unrolls: int = 2, **kw) -> UnrolledNet:
    _, conv_dims, fft_ndim = LAYOUTS[layout]
    torch.manual_seed(0)
    return UnrolledNet(num_unrolls, prox, dc, conv_dims=conv_dims, fft_ndim=fft_ndim, **kw)


# ---------------------------------------------------------------- shapes


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("prox", [RESNET, UNET], ids=["resnet", "unet"])
@pytest.mark.parametrize("dc", ["pgd", "modl"])
def test_output_is_complex_image_of_input_shape(layout, prox, dc):
    y, maps, mask, x = make_batch(layout)
    out = make_net(layout, dc, prox)(y, maps, mask)
    assert out.shape == x.shape and out.dtype == torch.complex64
    assert torch.isfinite(torch.view_as_real(out)).all()


def test_soft_sense_maps_give_one_image_per_map():
    y, maps, mask, x = make_batch("2d", maps=2, batch=2)
    net = make_net("2d", num_maps=2)
    with torch.no_grad():
        start, out = net(y, maps, mask, num_unrolls=0), net(y, maps, mask)
    # The chain starts from the adjoint, which gives each map set its own image, and keeps them apart.
    assert torch.equal(start, SenseOp(maps, mask, 2).H(y)) and start.shape == x.shape == (2, 2, 16, 16)
    assert out.shape == x.shape and not torch.allclose(out[:, 0], out[:, 1])


def test_maps_count_must_match_network():
    y, maps, mask, _ = make_batch("2d", maps=2)
    with pytest.raises(ValueError, match="num_maps=1"):
        make_net("2d")(y, maps, mask)


def test_maps_rank_must_match_conv_dims():
    y, maps, mask, _ = make_batch("3d")
    with pytest.raises(ValueError, match="conv_dims=2"):
        UnrolledNet(1, RESNET, conv_dims=2)(y, maps, mask)


# ---------------------------------------------------------------- construction and registry


@pytest.mark.parametrize("n", [0, -1, 1.5])
def test_unroll_count_must_be_positive_integer(n):
    with pytest.raises(ValueError, match="num_unrolls"):
        UnrolledNet(n, RESNET)


def test_unknown_dc_is_rejected():
    with pytest.raises(ValueError, match="dc must be one of"):
        UnrolledNet(2, RESNET, dc="admm")


def test_unknown_prox_name_lists_registered_names():
    with pytest.raises(ValueError, match="unknown prox name 'densenet'") as err:
        build_prox({"name": "densenet"}, 2, 2)
    assert "resnet" in str(err.value) and "unet" in str(err.value)


def test_prox_config_without_name_is_rejected():
    with pytest.raises(ValueError, match="'name' key"):
        UnrolledNet(2, {"channels": 8})


def test_unknown_prox_option_is_named():
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['chanels'\]"):
        build_prox({"name": "resnet", "chanels": 8}, 2, 2)


def test_bad_prox_values_are_named():
    with pytest.raises(ValueError, match="num_blocks"):
        build_prox({"name": "resnet", "num_blocks": -1}, 2, 2)
    with pytest.raises(ValueError, match="num_blocks"):
        build_prox({"name": "unet", "num_blocks": 0}, 2, 2)
    with pytest.raises(ValueError, match="conv_dims must be 2 or 3"):
        build_prox(RESNET, 2, 1)


def test_new_prox_kind_plugs_in_by_name(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))

    @register_prox("scaled_identity")
    class ScaledIdentity(torch.nn.Module):
        def __init__(self, in_channels: int, conv_dims: int, scale: float = 1.0):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.tensor(scale))

        def forward(self, x):
            return self.scale * x

    assert "scaled_identity" in registered_prox()
    y, maps, mask, _ = make_batch("2d")
    net = UnrolledNet(1, {"name": "scaled_identity", "scale": 0.0}, dc="pgd")
    assert torch.count_nonzero(net(y, maps, mask)) == 0


def test_registering_a_name_twice_is_rejected():
    with pytest.raises(ValueError, match="already registered"):
        register_prox("resnet")(ResNetProx)


def test_shared_weights_use_one_module():
    net = make_net("2d", num_unrolls=3, share_weights=True)
    assert all(u is net.unrolls[0] for u in net.unrolls)
    assert net.num_parameters() == make_net("2d", num_unrolls=1).num_parameters()
    assert make_net("2d", num_unrolls=3).num_parameters() == 3 * net.num_parameters()


# ---------------------------------------------------------------- unroll semantics


@pytest.mark.parametrize("dc", ["pgd", "modl"])
def test_stopping_after_k_unrolls_equals_running_the_first_k(dc):
    y, maps, mask, _ = make_batch("2d")
    net = make_net("2d", dc, num_unrolls=3)
    A = SenseOp(maps, mask, 2)
    x = A.H(y)
    with torch.no_grad():
        assert torch.equal(net(y, maps, mask, num_unrolls=0), x)
        for k in range(3):
            x = net.unrolls[k](x, A, y)
            assert torch.allclose(net(y, maps, mask, num_unrolls=k + 1), x, atol=1e-6)
    with pytest.raises(ValueError, match=r"num_unrolls must be an integer in \[0, 3\]"):
        net(y, maps, mask, num_unrolls=4)


def test_pgd_unroll_is_gradient_step_then_prox():
    y, maps, mask, x = make_batch("2d")
    net = make_net("2d", "pgd", num_unrolls=1, step_size_init=0.3)
    unroll, A = net.unrolls[0], SenseOp(maps, mask, 2)
    v = x - 0.3 * A.H(A(x) - y)
    with torch.no_grad():
        assert torch.allclose(unroll(x, A, y), unroll.apply_prox(v), atol=1e-5)


def test_modl_unroll_solves_its_normal_equations():
    y, maps, mask, x = make_batch("2d")
    net = make_net("2d", "modl", num_unrolls=1, lam_init=0.5, cg_iters=40)
    unroll, A = net.unrolls[0], SenseOp(maps, mask, 2)
    with torch.no_grad():
        out, z = unroll(x, A, y), unroll.apply_prox(x)
        residual = A.N(out) + 0.5 * out - (A.H(y) + 0.5 * z)
    assert residual.norm() / A.H(y).norm() < 1e-5


def test_learnable_dc_parameters_start_at_their_initial_values():
    assert torch.isclose(make_net("2d", "pgd", step_size_init=0.7).unrolls[0].step_size, torch.tensor(0.7))
    assert torch.isclose(make_net("2d", "pgd", step_size_init=0.7, step_size_max=1.0).unrolls[0].step_size,
                         torch.tensor(0.7))
    assert torch.isclose(make_net("2d", "modl", lam_init=4.0).unrolls[0].lam, torch.tensor(4.0))


def test_step_size_must_lie_below_its_maximum():
    with pytest.raises(ValueError, match="step_size_init"):
        UnrolledNet(1, RESNET, step_size_init=1.0, step_size_max=1.0)


# ---------------------------------------------------------------- inverses


def test_modl_dc_inverse_is_exact():
    y, maps, mask, z = make_batch("2d")
    A = SenseOp(maps, mask, 2)
    x = modl_data_consistency(z, A, y, 0.5, cg_iters=60)
    assert (modl_data_consistency_inverse(x, A, y, 0.5) - z).norm() / z.norm() < 1e-5


def test_gradient_step_inverse_is_exact():
    y, maps, mask, x = make_batch("2d")
    A = SenseOp(maps, mask, 2)
    v = gradient_step(x, A, y, 0.8)
    assert (gradient_step_inverse(v, A, y, 0.8) - x).norm() / x.norm() < 1e-5


# ---------------------------------------------------------------- certified spectral normalisation


def dense_conv_norm(weight: torch.Tensor, spatial: tuple[int, ...]) -> float:
    """Exact largest singular value of the dense matrix of the zero-padded 'same' convolution on `spatial`."""
    n = weight.shape[1] * math.prod(spatial)
    basis = torch.eye(n, dtype=torch.float64).reshape(n, weight.shape[1], *spatial)
    conv = torch.nn.functional.conv2d if len(spatial) == 2 else torch.nn.functional.conv3d
    rows = conv(basis, weight.double(), padding=weight.shape[-1] // 2).reshape(n, -1)  # the matrix's transpose
    gram = rows @ rows.T if rows.shape[0] <= rows.shape[1] else rows.T @ rows
    return float(torch.linalg.eigvalsh(gram)[-1].sqrt())  # (a symmetric eigensolver: faster than an SVD)


def grid_sup(weight: torch.Tensor, m: int) -> float:
    """max over the m^d DFT frequencies of sigma_max of the kernel's transfer matrix (FFT of the kernel):
    the norm of the circular convolution on m^d samples, a lower bound of the sup over all frequencies."""
    d = weight.dim() - 2
    k = torch.fft.fftn(weight.double(), s=(m,) * d, dim=tuple(range(2, 2 + d)))
    return float(torch.linalg.matrix_norm(k.flatten(2).permute(2, 0, 1), ord=2).max())


# (C_out, C_in, *kernel) -> input sizes, some larger than the coarse frequency grid (12 in 2D, 18 in 3D)
CERTIFY_CASES = {(2, 3, 3, 3): [(3, 3), (6, 6), (7, 11), (16, 16), (30, 5)],
                 (4, 2, 5, 5): [(4, 4), (9, 13), (26, 6)],
                 (2, 2, 3, 3, 3): [(3, 3, 3), (5, 4, 6), (24, 3, 3)]}


@pytest.mark.parametrize("shape", sorted(CERTIFY_CASES), ids=str)
def test_certified_bound_covers_the_exact_norm_at_every_input_size(shape):
    for seed in range(2):
        weight = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
        bound = certified_conv_norm(weight).bound
        for spatial in CERTIFY_CASES[shape]:
            assert bound - dense_conv_norm(weight, spatial) >= 0, (seed, spatial)


@pytest.mark.parametrize("shape", [(2, 3, 3, 3), (8, 8, 3, 3), (4, 2, 5, 5), (2, 2, 3, 3, 3)], ids=str)
def test_certified_bound_is_within_its_tolerance_of_the_norm_on_large_inputs(shape):
    weight = torch.randn(shape, generator=torch.Generator().manual_seed(3))
    # The norm on large inputs tends to the sup over frequencies; a fine grid gets within 0.1% of it here.
    sup = grid_sup(weight, 128 if len(shape) == 4 else 64)
    bound = certified_conv_norm(weight, tolerance=0.01).bound
    assert sup <= bound <= 1.01 * 1.001 * sup


def test_certified_bound_covers_a_peak_between_the_coarse_frequencies():
    """Sampling alone is not enough: this kernel (the worst of 3000 random ones) peaks between the
    frequencies of a 12 x 12 grid, which sees only 95.5% of the sup."""
    weight = torch.randn(1, 1, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(237))
    sup = grid_sup(weight, 480)
    assert grid_sup(weight, 12) < 0.96 * sup
    cert = certified_conv_norm(weight)
    assert sup <= cert.bound <= 1.01 * 1.001 * sup
    assert dense_conv_norm(weight, (40, 40)) <= cert.bound


def test_certificate_gradient_is_that_of_the_bound():
    weight = torch.randn(4, 3, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    direction = torch.randn(4, 3, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    eps = 1e-6
    slope = (certified_conv_norm(weight + eps * direction).bound
             - certified_conv_norm(weight - eps * direction).bound) / (2 * eps)
    assert float((certified_conv_norm(weight).gradient * direction).sum()) == pytest.approx(slope, rel=1e-5)


def test_sigma_is_the_certified_bound_with_its_gradient():
    conv = NormBoundedConv(3, 4, conv_dims=2, kernel_size=3, bound=100.0)
    cert = certified_conv_norm(conv.weight)
    sigma = conv.sigma()
    (grad,) = torch.autograd.grad(sigma, conv.weight)
    assert float(sigma.detach()) == pytest.approx(cert.bound, rel=1e-4)
    assert torch.allclose(grad, cert.gradient.float())


def test_certificates_are_the_same_alone_and_together():
    g = torch.Generator().manual_seed(0)
    weights = [torch.randn(8, 8, 3, 3, generator=g), torch.randn(2, 8, 3, 3, generator=g),
               torch.randn(8, 8, 3, 3, generator=g), torch.randn(8, 2, 3, 3, generator=g)]
    for together, alone in zip(certified_conv_norms(weights), map(certified_conv_norm, weights)):
        assert together.bound == alone.bound and torch.equal(together.gradient, alone.gradient)


def test_zero_and_pointwise_kernels_have_exact_norms():
    assert certified_conv_norm(torch.zeros(3, 2, 3, 3)).bound == 0
    weight = torch.randn(3, 2, 1, 1, dtype=torch.float64)
    exact = float(torch.linalg.matrix_norm(weight[:, :, 0, 0], ord=2))
    assert certified_conv_norm(weight).bound == pytest.approx(exact, rel=1e-5)


def test_normalised_conv_has_the_operator_norm_it_certifies():
    conv = NormBoundedConv(2, 3, conv_dims=2, kernel_size=3, bound=0.5)
    with torch.no_grad():
        conv.weight.mul_(10)  # far above the bound: the normalisation is active
        conv(torch.zeros(1, 2, 6, 6))  # operator_norm defaults to the last input's size
        exact = dense_conv_norm(conv.effective_weight(), (6, 6))
    assert conv.operator_norm(iters=1000) == pytest.approx(exact, rel=1e-3)
    assert exact <= conv.certified_norm() == 0.5
    assert conv.operator_norm(iters=300, spatial=(40, 40)) <= 0.5


def test_normalisation_state_does_not_depend_on_the_input_size():
    prox = ResNetProx(2, 2, channels=4, num_blocks=1, lipschitz=0.9)

    def held_bytes() -> list[int]:
        tensors = [*prox.parameters(), *prox.buffers(), *prox.state_dict().values()]
        return [t.numel() * t.element_size() for t in tensors]

    with torch.no_grad():
        prox(torch.randn(1, 2, 16, 16))
        small = held_bytes()
        prox(torch.randn(1, 2, 128, 128))
    assert held_bytes() == small


def test_certificate_first_computed_in_inference_mode_serves_training():
    """A validation loop (torch.inference_mode) may be the first to see new weights; training reuses it."""
    prox = ResNetProx(2, 2, channels=4, num_blocks=1, lipschitz=0.9)
    x = torch.randn(1, 2, 8, 8)
    with torch.inference_mode():
        validated = prox(x)
    trained = prox(x)
    trained.sum().backward()
    assert torch.equal(trained.detach(), validated)
    assert all(p.grad is not None for p in prox.parameters())


@pytest.mark.parametrize("spatial", [(16, 16), (48, 40)])
def test_lipschitz_resnet_respects_its_bound(spatial):
    prox = ResNetProx(2, 2, channels=8, num_blocks=2, lipschitz=0.9)
    with torch.no_grad():
        for conv in (prox.conv_in, prox.conv_out):
            conv.weight.mul_(20)  # make the normalisation bind
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(4, 2, *spatial, generator=g), torch.randn(4, 2, *spatial, generator=g)
    with torch.no_grad():
        ratio = (prox.residual(a) - prox.residual(b)).flatten(1).norm(dim=1) / (a - b).flatten(1).norm(dim=1)
    bound = prox.lipschitz_bound()
    assert bound < 0.9
    assert float(ratio.max()) <= bound


def test_lipschitz_resnet_inverts_by_fixed_point_iteration():
    prox = ResNetProx(2, 2, channels=8, num_blocks=2, lipschitz=0.9)
    x = torch.randn(2, 2, 16, 16)
    with torch.no_grad():
        z = prox(x)
    rebuilt, residual = prox.inverse(z, iters=200, tol=1e-7)
    assert prox.is_invertible and residual <= 1e-6
    assert (rebuilt - x).norm() / x.norm() < 1e-5


def test_unconstrained_resnet_and_unet_are_not_invertible():
    for prox in (ResNetProx(2, 2, channels=8), ResNetProx(2, 2, channels=8, lipschitz=2.0), UNetProx(2, 2, 8)):
        assert not prox.is_invertible
        with pytest.raises(ValueError, match="not invertible|invertible only"):
            prox.inverse(torch.zeros(1, 2, 8, 8))


def test_spectral_normalisation_is_fixed_within_a_training_step():
    """Checkpoint recomputation and MEL's re-runs need the same function until the weights change."""
    prox = ResNetProx(2, 2, channels=8, num_blocks=1, lipschitz=0.9).train()
    x = torch.randn(1, 2, 16, 16)
    first = prox(x)
    assert torch.equal(prox(x), first)
    with torch.no_grad():
        for p in prox.parameters():
            p.add_(0.01)
    assert not torch.equal(prox(x), first)


def _certificates_current(module: torch.nn.Module) -> list[bool]:
    return [m._certificate_is_current() for m in module.modules() if isinstance(m, NormBoundedConv)]


def test_certificates_are_refreshed_only_in_the_network_or_module_that_runs():
    """No hidden coupling: a forward certifies its own convolutions, never another network's (a benchmark
    running several networks in turn would otherwise charge one with the others' certificates), and a
    GLEAM module's `prepare` certifies that module's unrolls only."""
    y, s, mask, _ = make_batch("2d")
    a, b = make_net("2d", prox=LIPSCHITZ_RESNET), make_net("2d", prox=LIPSCHITZ_RESNET)
    a(y, s, mask), b(y, s, mask)
    for net in (a, b):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(0.01)
    b(y, s, mask)
    assert all(_certificates_current(b)) and not any(_certificates_current(a))
    a.prepare([1])
    assert not any(_certificates_current(a.unrolls[0])) and all(_certificates_current(a.unrolls[1]))
    a(y, s, mask, num_unrolls=1)
    assert all(_certificates_current(a))


def test_lipschitz_resnet_state_dict_round_trip_reproduces_outputs():
    prox = ResNetProx(2, 2, channels=8, num_blocks=1, lipschitz=0.9)
    x = torch.randn(1, 2, 16, 16)
    prox(x)
    clone = ResNetProx(2, 2, channels=8, num_blocks=1, lipschitz=0.9)
    clone.load_state_dict(copy.deepcopy(prox.state_dict()))
    prox.eval(), clone.eval()
    assert torch.equal(clone(x), prox(x))


def test_lipschitz_resnet_deep_copy_computes_the_same_function_in_training():
    prox = ResNetProx(2, 2, channels=8, num_blocks=1, lipschitz=0.9).train()
    x = torch.randn(1, 2, 16, 16)
    prox(x)
    assert torch.equal(copy.deepcopy(prox)(x), prox(x))


@pytest.mark.parametrize("spatial", [(13, 11), (5, 6, 7)])
def test_unet_accepts_sizes_not_divisible_by_its_stride(spatial):
    prox = UNetProx(2, len(spatial), channels=4, num_blocks=2)
    x = torch.randn(1, 2, *spatial)
    assert prox(x).shape == x.shape


@pytest.mark.parametrize("dc", ["pgd", "modl"])
def test_unroll_inverse_rebuilds_its_input(dc):
    y, maps, mask, x = make_batch("2d")
    net = make_net("2d", dc, LIPSCHITZ_RESNET, num_unrolls=1, step_size_max=1.0, cg_iters=30)
    unroll, A = net.unrolls[0], SenseOp(maps, mask, 2)
    with torch.no_grad():
        out = unroll(x, A, y)
    assert unroll.is_invertible
    assert (unroll.inverse(out, A, y) - x).norm() / x.norm() < 1e-4
