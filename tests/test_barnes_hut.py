"""Barnes-Hut repulsion against the exact sum, and the simulation step built on it."""

from __future__ import annotations

import math

import pytest
import torch

from layout.barnes_hut import build_tree, repulsion, repulsion_exact
from layout.forces import (
    ForceSettings,
    attraction,
    cap_forces,
    converged,
    initial_state,
    simulation_step,
    total_force,
)


def uniform_points(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 2, generator=g), torch.ones(n)


def clustered_points(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Tight Gaussian clusters of very different sizes, with charges from 0.5 to 1.5."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(12, 2, generator=g) * 10
    spread = 10 ** (torch.rand(12, generator=g) * 3 - 3)  # 0.001 to 1
    which = torch.randint(0, 12, (n,), generator=g)
    points = centres[which] + spread[which, None] * torch.randn(n, 2, generator=g)
    return points, torch.rand(n, generator=g) + 0.5


def median_error(points: torch.Tensor, charges: torch.Tensor, **kwargs) -> float:
    exponent = kwargs.get("exponent", 2.0)
    exact = repulsion_exact(points.double(), charges.double(), exponent).float()
    approx = repulsion(points, charges, **kwargs)
    error = (approx - exact).norm(dim=1) / exact.norm(dim=1)
    return float(error.median())


@pytest.mark.parametrize("make", [uniform_points, clustered_points])
def test_median_error_is_below_one_percent_at_theta_half(make):
    points, charges = make(3000)
    assert median_error(points, charges, theta=0.5) <= 0.01


@pytest.mark.parametrize("make", [uniform_points, clustered_points])
def test_error_shrinks_as_theta_shrinks(make):
    points, charges = make(3000, seed=1)
    errors = [median_error(points, charges, theta=t) for t in (0.8, 0.5, 0.3)]
    assert errors[0] > errors[1] > errors[2]


def test_theta_zero_is_exact():
    points, charges = clustered_points(500, seed=2)
    exact = repulsion_exact(points.double(), charges.double())
    approx = repulsion(points.double(), charges.double(), theta=0.0)
    torch.testing.assert_close(approx, exact, rtol=1e-10, atol=1e-10)


def test_exact_repulsion_matches_a_hand_computed_case():
    points = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    charges = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    # Force on i: sum over j of q_i q_j (p_i - p_j) / d^2.
    # 0: 2·(-1, 0)/1 + 3·(0, -2)/4 = (-2, -1.5)
    # 1: 2·(1, 0)/1 + 6·(1, -2)/5 = (3.2, -2.4)
    # 2: 3·(0, 2)/4 + 6·(-1, 2)/5 = (-1.2, 3.9)
    expected = torch.tensor([[-2.0, -1.5], [3.2, -2.4], [-1.2, 3.9]], dtype=torch.float64)
    torch.testing.assert_close(repulsion_exact(points, charges), expected)
    torch.testing.assert_close(repulsion(points, charges), expected)
    # Exponent 3: magnitude q_i q_j / d^2, e.g. on 0: 2·(-1, 0) + 3·(0, -2)/8.
    torch.testing.assert_close(
        repulsion_exact(points, charges, exponent=3.0)[0],
        torch.tensor([-2.0, -0.75], dtype=torch.float64),
    )


def test_exact_repulsion_is_the_same_in_any_chunk_size():
    points, charges = uniform_points(700, seed=3)
    whole = repulsion_exact(points, charges, chunk=10**7)
    torch.testing.assert_close(repulsion_exact(points, charges, chunk=1000), whole)
    torch.testing.assert_close(repulsion_exact(points, charges, chunk=1), whole)


@pytest.mark.parametrize("exponent", [1.5, 2.5])
def test_other_exponents_match_exact(exponent):
    points, charges = clustered_points(2000, seed=4)
    assert median_error(points, charges, theta=0.5, exponent=exponent) <= 0.01


def test_forces_scale_as_the_product_of_charges():
    points, charges = clustered_points(1500, seed=5)
    points, charges = points.double(), charges.double()
    base = repulsion(points, charges)
    torch.testing.assert_close(repulsion(points, 3 * charges), 9 * base)
    two = torch.tensor([[0.0, 0.0], [2.0, 0.0]])
    force = repulsion(two, torch.tensor([2.0, 5.0]))
    torch.testing.assert_close(force, torch.tensor([[-5.0, 0.0], [5.0, 0.0]]))


def test_coincident_points_give_finite_forces():
    points, charges = uniform_points(1000, seed=6)
    points[:300] = points[0]  # a pile far deeper than the tree can split
    points[300:310] = points[300] + 1e-9 * torch.randn(10, 2)
    approx = repulsion(points, charges)
    exact = repulsion_exact(points, charges)
    assert torch.isfinite(approx).all() and torch.isfinite(exact).all()
    # Coincident points do not push each other, so the pile feels only the rest.
    far = repulsion_exact(points[299:], charges[299:])[0]
    torch.testing.assert_close(exact[0], far, rtol=1e-4, atol=1e-3)
    error = (approx - exact).norm(dim=1) / exact.norm(dim=1).clamp_min(1e-6)
    assert float(error.median()) <= 0.01


def test_a_single_point_and_no_points_feel_nothing():
    assert repulsion(torch.zeros(0, 2), torch.zeros(0)).shape == (0, 2)
    assert torch.equal(repulsion(torch.ones(1, 2), torch.ones(1)), torch.zeros(1, 2))


def test_tree_leaves_partition_the_points_and_hold_few():
    points, charges = clustered_points(3000, seed=7)
    tree = build_tree(points, charges, leaf_size=6)
    leaves = torch.nonzero(tree.leaf).squeeze(1)
    assert int(tree.count[leaves].sum()) == 3000
    assert int(tree.count[leaves].max()) <= 6
    assert torch.equal(torch.sort(tree.order).values, torch.arange(3000))
    # Each cell's charge is the sum over its points, and every point lies in its radius.
    cell = tree.leaf_of_point.long()
    torch.testing.assert_close(tree.charge[0], charges.sum())
    reach = (tree.points - tree.centre[cell]).norm(dim=1)
    assert bool((reach <= tree.radius[cell] * (1 + 1e-5) + 1e-6).all())


def test_float64_and_device_are_kept_and_mixed_dtypes_refused():
    points, charges = uniform_points(400, seed=8)
    force = repulsion(points.double(), charges.double())
    assert force.dtype == torch.float64 and force.device == points.device
    with pytest.raises(TypeError, match="dtype"):
        repulsion(points, charges.double())
    edges, weights = ring(400)
    state = initial_state(points.double(), edges, weights, charges.double())
    state = simulation_step(state, edges, weights, charges.double())
    for tensor in (state.positions, state.velocities, state.forces):
        assert tensor.dtype == torch.float64 and tensor.device == points.device


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu_and_stays_on_the_device():
    points, charges = clustered_points(5000, seed=12)
    cpu = repulsion(points, charges)
    gpu = repulsion(points.cuda(), charges.cuda())
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-3, atol=1e-3)
    edges, weights = ring(5000)
    state = initial_state(points.cuda(), edges.cuda(), weights.cuda(), charges.cuda())
    state = simulation_step(state, edges.cuda(), weights.cuda(), charges.cuda())
    assert state.positions.device.type == "cuda" and torch.isfinite(state.positions).all()


def ring(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    edges = torch.stack([torch.arange(n), (torch.arange(n) + 1) % n], 1)
    return edges, torch.ones(n)


def test_attraction_pulls_both_ends_by_weight_times_separation():
    positions = torch.tensor([[0.0, 0.0], [3.0, 4.0], [10.0, 10.0]])
    edges = torch.tensor([[0, 1]])
    pull = attraction(positions, edges, torch.tensor([2.0]))
    torch.testing.assert_close(pull, torch.tensor([[6.0, 8.0], [-6.0, -8.0], [0.0, 0.0]]))


def test_force_cap_clips_magnitude_and_keeps_direction():
    forces = torch.tensor([[3.0, 4.0], [0.3, 0.4], [0.0, 0.0]])
    capped = cap_forces(forces, 1.0)
    torch.testing.assert_close(capped, torch.tensor([[0.6, 0.8], [0.3, 0.4], [0.0, 0.0]]))


def test_simulation_unfolds_a_collapsed_ring_and_settles():
    n = 40
    edges, weights = ring(n)
    g = torch.Generator().manual_seed(9)
    start = 1e-3 * torch.randn(n, 2, generator=g)
    charges = torch.ones(n)
    settings = ForceSettings()
    state = initial_state(start, edges, weights, charges, settings)
    first_energy = state.energy
    while state.iteration < 1000 and not converged(state):
        state = simulation_step(state, edges, weights, charges, settings)
    assert converged(state)
    assert torch.isfinite(state.positions).all()
    assert state.energy < first_energy
    # A ring laid out well is a circle: nodes at a common radius, neighbours at equal angles.
    centred = state.positions - state.positions.mean(0)
    radius = centred.norm(dim=1)
    assert float(radius.std() / radius.mean()) < 0.1
    angle = torch.atan2(centred[:, 1], centred[:, 0])
    step = torch.remainder(angle.roll(-1) - angle + math.pi, 2 * math.pi) - math.pi
    assert float(step.abs().std() / step.abs().mean()) < 0.15


def test_simulation_moves_overlapping_nodes_apart():
    n = 200
    g = torch.Generator().manual_seed(10)
    side = math.isqrt(n)
    index = torch.arange(side * side).view(side, side)
    edges = torch.cat(
        [
            torch.stack([index[:, :-1].reshape(-1), index[:, 1:].reshape(-1)], 1),
            torch.stack([index[:-1].reshape(-1), index[1:].reshape(-1)], 1),
        ]
    )
    count = side * side
    weights, charges = torch.ones(len(edges)), torch.ones(count)
    state = initial_state(0.01 * torch.rand(count, 2, generator=g), edges, weights, charges)
    spread = torch.pdist(state.positions).min()
    for _ in range(300):
        state = simulation_step(state, edges, weights, charges)
    assert float(torch.pdist(state.positions).min()) > 10 * float(spread)
    assert torch.isfinite(state.positions).all()
    # The grid's neighbours end up closer than nodes two or more hops apart.
    i, j = edges[:, 0], edges[:, 1]
    edge_length = (state.positions[i] - state.positions[j]).norm(dim=1).mean()
    assert float(edge_length) < float(torch.pdist(state.positions).median())


def test_total_force_is_capped():
    points, charges = uniform_points(300, seed=11)
    edges, weights = ring(300)
    settings = ForceSettings(repulsion=1e6, cap=0.5)
    force = total_force(points, edges, weights, charges, settings)
    assert float(force.norm(dim=1).max()) <= 0.5 + 1e-6
