"""One step of the force simulation behind the neural map, and the forces it adds up.

Every node is pushed away from every other (`layout.barnes_hut.repulsion`, charges from the
caller), pulled along its edges (`attraction`) and held near the origin (`centring`); each
node's total force is clipped to ``cap`` (`cap_forces`). `simulation_step` moves the nodes
with velocity Verlet and drag, and adapts the step size from the force energy (Hu's adaptive
cooling, as in the original Immersions layout). The multilevel layout calls
`simulation_step` per level until `converged`.

All functions work on the tensors' own device and dtype (float32 or float64).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor

from layout.barnes_hut import SOFTENING, repulsion

__all__ = [
    "ForceSettings",
    "LayoutState",
    "attraction",
    "cap_forces",
    "centring",
    "converged",
    "initial_state",
    "simulation_step",
    "total_force",
]


@dataclass(frozen=True)
class ForceSettings:
    """Strengths and integration constants of the simulation.

    Repulsion between i and j is ``repulsion * q_i q_j / Q`` with ``Q`` the total charge,
    and the centring pull on i is ``centring * q_i`` per unit of distance: the layout's
    extent then does not grow with the number of nodes or the scale of the charges, so a
    coarse level and its refinement have the same size and the settings need no tuning per
    graph (with unit charges and weights the layout spans a few units).

    ``exponent`` 2 makes the push fall off as ``1 / d``, the two-dimensional analogue of
    electrostatics (and ForceAtlas2's and Fruchterman-Reingold's repulsion): distant groups
    still feel each other, so the map fills the plane evenly. On 5 000-node k-nearest-
    neighbour graphs from a random start, the original's 2.5 reached about the same
    neighbourhood preservation (within 0.02) but more slowly, and 3 much more slowly
    (tests/bench/bench_layout.py --exponents); 2 also needs no ``pow``. ``theta`` 1.2 (fa2's
    default; a median force error near 1 %) gave the same layouts as 0.5 (within 0.01) for
    about a third of the repulsion time.
    """

    theta: float = 1.2  # Barnes-Hut opening criterion, see layout.barnes_hut
    exponent: float = 2.0  # repulsion magnitude q_i q_j / d^(exponent - 1)
    repulsion: float = 1.0  # multiplies every charge product (over the total charge)
    attraction: float = 1.0  # multiplies every edge weight
    centring: float = 0.01  # pull toward the origin per unit of charge and distance
    cap: float = 1.0  # largest force magnitude on any node
    drag: float = 0.2  # fraction of the velocity lost per step
    step: float = 0.5  # initial step size
    cooling: float = 0.98  # step *= cooling when the energy rises
    patience: int = 5  # step /= cooling after this many consecutive decreases
    softening: float = SOFTENING  # see layout.barnes_hut


@dataclass(frozen=True)
class LayoutState:
    """Where the simulation is: positions, velocities, the forces at the positions and the
    adaptive step's bookkeeping."""

    positions: Tensor  # (N, 2)
    velocities: Tensor  # (N, 2)
    forces: Tensor  # (N, 2) capped total force at `positions`
    step: float
    energy: float  # sum of squared forces at `positions`
    progress: int = 0  # consecutive steps that lowered the energy
    displacement: float = float("inf")  # mean distance moved by the last step
    iteration: int = 0


def attraction(positions: Tensor, edges: Tensor, weights: Tensor) -> Tensor:
    """Spring pull (N, 2) along edges: each end moves toward the other with force
    ``weight * (p_other - p_self)``.

    ``edges`` (E, 2) integer node indices, one row per undirected edge (a row and its
    reverse pull twice); ``weights`` (E,).
    """
    i, j = edges[:, 0], edges[:, 1]
    weights = weights.to(positions.dtype)
    out = torch.zeros(2, positions.shape[0], dtype=positions.dtype, device=positions.device)
    # One coordinate at a time: gathers and index_add on 1-D tensors are several times
    # faster than on (E, 2) rows.
    for axis in range(2):
        coordinate = positions[:, axis].contiguous()
        pull = coordinate.index_select(0, j) - coordinate.index_select(0, i)
        pull.mul_(weights)
        out[axis].index_add_(0, i, pull)
        out[axis].index_add_(0, j, pull, alpha=-1)
    return out.T


def centring(positions: Tensor, charges: Tensor, strength: float) -> Tensor:
    """Pull (N, 2) toward the origin, proportional to each node's charge and distance."""
    return positions * (charges * -strength)[:, None]


def cap_forces(forces: Tensor, cap: float) -> Tensor:
    """The forces with every row's magnitude clipped to ``cap`` (directions kept)."""
    norm = torch.hypot(forces[:, 0], forces[:, 1])
    return forces * (cap / norm.clamp_min(cap))[:, None]


def total_force(
    positions: Tensor, edges: Tensor, weights: Tensor, charges: Tensor, settings: ForceSettings
) -> Tensor:
    """Repulsion + attraction + centring (N, 2) at ``positions``, capped."""
    total = float(charges.sum())
    if settings.repulsion and total > 0:
        force = repulsion(
            positions, charges, settings.theta, settings.exponent, softening=settings.softening
        )
        force.mul_(settings.repulsion / total)
    else:
        force = torch.zeros_like(positions)
    if len(edges) and settings.attraction:
        force.add_(attraction(positions, edges, weights), alpha=settings.attraction)
    if settings.centring:
        force.add_(centring(positions, charges, settings.centring))
    return cap_forces(force, settings.cap)


def _energy(forces: Tensor) -> float:
    return float(forces.square().sum())


def initial_state(
    positions: Tensor,
    edges: Tensor,
    weights: Tensor,
    charges: Tensor,
    settings: ForceSettings = ForceSettings(),
) -> LayoutState:
    """A state at rest at ``positions`` (which it does not copy)."""
    forces = total_force(positions, edges, weights, charges, settings)
    return LayoutState(
        positions=positions,
        velocities=torch.zeros_like(positions),
        forces=forces,
        step=settings.step,
        energy=_energy(forces),
    )


def simulation_step(
    state: LayoutState,
    edges: Tensor,
    weights: Tensor,
    charges: Tensor,
    settings: ForceSettings = ForceSettings(),
) -> LayoutState:
    """One velocity-Verlet step with drag, then the step-size update; returns a new state.

    The step shrinks by ``cooling`` whenever the force energy rises and grows by
    ``1 / cooling`` after ``patience`` decreases in a row. One force evaluation per step.
    """
    h = state.step
    positions = state.positions + h * state.velocities + (0.5 * h * h) * state.forces
    forces = total_force(positions, edges, weights, charges, settings)
    velocities = (state.velocities + (0.5 * h) * (state.forces + forces)) * (1 - settings.drag)
    energy = _energy(forces)
    step, progress = h, state.progress
    if energy < state.energy:
        progress += 1
        if progress >= settings.patience:
            step, progress = h / settings.cooling, 0
    else:
        step, progress = h * settings.cooling, 0
    shift = positions - state.positions
    moved = torch.hypot(shift[:, 0], shift[:, 1]).mean()
    return replace(
        state,
        positions=positions,
        velocities=velocities,
        forces=forces,
        step=step,
        energy=energy,
        progress=progress,
        displacement=float(moved),
        iteration=state.iteration + 1,
    )


def converged(state: LayoutState, tolerance: float = 1e-3) -> bool:
    """Whether the last step moved the nodes less than ``tolerance`` on average."""
    return state.displacement < tolerance
