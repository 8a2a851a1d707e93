"""Layout step time and quality against fa2 (Cython ForceAtlas2 with Barnes-Hut).

Run on demand (not collected by pytest)::

    .venv/bin/python tests/bench/bench_layout.py [--json] [--nodes N] [--fa2-iterations N]
        [--scaling] [--million] [--exponents] [--no-compare] [--threads N]

The graph is the k-nearest-neighbour graph (k = 10, symmetrised, one row per undirected
edge) of random points in the unit square, every node with charge 1 and every edge weight 1.
On it the script measures, in one process:

- time per iteration of our whole `simulation_step` (repulsion + attraction + centring +
  integration) at the default theta and at theta 0.5, and of fa2's ForceAtlas2 iteration
  (its own defaults: theta 1.2, scaling 2, gravity 1), each after warm-up; and the ratio;
- quality at equal wall-clock time: both start from the same random positions, fa2 runs a
  fixed number of iterations, ours runs for as long as fa2 took; then neighbourhood
  preservation (k = 10: mean fraction of each node's 10 nearest neighbours in the layout
  that are among its 10 nearest in the original points). fa2's time is counted from the
  end of its first iteration (its setup is not timed), which gives it one free iteration;
- with ``--scaling``, repulsion and step time at 10 k to 300 k nodes (1 M with
  ``--million``) and the growth exponent between sizes (1 would be linear);
- with ``--exponents``, neighbourhood preservation after a fixed number of steps for
  repulsion exponents 2, 2.5 and 3 (the evidence behind `ForceSettings.exponent`).

fa2 (PyPI ``fa2``, GPLv3) is only a benchmark peer; the script checks that its compiled
Cython module is the one in use.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import itertools
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from layout.barnes_hut import repulsion
from layout.forces import ForceSettings, initial_state, simulation_step
from tests.bench.common import machine, median_seconds

K = 10


# ---------------------------------------------------------------------------- graph
def knn_graph(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random points in the unit square, their k-NN indices (n, K) and undirected edges."""
    from sklearn.neighbors import NearestNeighbors

    points = np.random.default_rng(seed).random((n, 2))
    neighbours = NearestNeighbors(n_neighbors=K + 1).fit(points).kneighbors(points)[1][:, 1:]
    pairs = np.stack([np.repeat(np.arange(n), K), neighbours.reshape(-1)], 1)
    edges = np.unique(np.sort(pairs, 1), axis=0)
    return neighbours, edges


def neighbourhood_preservation(layout: np.ndarray, true_neighbours: np.ndarray) -> float:
    """Mean fraction of each node's K nearest neighbours in ``layout`` that are true ones."""
    from sklearn.neighbors import NearestNeighbors

    found = NearestNeighbors(n_neighbors=K + 1).fit(layout).kneighbors(layout)[1][:, 1:]
    shared = (found[:, :, None] == true_neighbours[:, None, :]).any(2).sum(1)
    return float(shared.mean() / K)


class Problem:
    """The graph as our tensors and as fa2's adjacency matrix."""

    def __init__(self, n: int) -> None:
        import scipy.sparse

        self.n = n
        self.true_neighbours, edges = knn_graph(n)
        self.edges = torch.from_numpy(edges).long()
        self.weights = torch.ones(len(edges))
        self.charges = torch.ones(n)
        both = np.concatenate([edges, edges[:, ::-1]])
        self.adjacency = scipy.sparse.csr_matrix(
            (np.ones(len(both)), (both[:, 0], both[:, 1])), shape=(n, n)
        )

    def start(self, seed: int = 1) -> np.ndarray:
        return np.random.default_rng(seed).random((self.n, 2))


# ---------------------------------------------------------------------------- ours
def our_step_seconds(problem: Problem, settings: ForceSettings) -> float:
    state = initial_state(
        torch.from_numpy(problem.start()).float(),
        problem.edges,
        problem.weights,
        problem.charges,
        settings,
    )

    def step() -> None:
        nonlocal state
        state = simulation_step(state, problem.edges, problem.weights, problem.charges, settings)

    return median_seconds(step, warmup=2, reps=7)


def our_layout_for(problem: Problem, seconds: float, settings: ForceSettings) -> dict:
    """Run our simulation from the common start for ``seconds`` of wall time."""
    begin = time.perf_counter()
    state = initial_state(
        torch.from_numpy(problem.start()).float(),
        problem.edges,
        problem.weights,
        problem.charges,
        settings,
    )
    while time.perf_counter() - begin < seconds:
        state = simulation_step(state, problem.edges, problem.weights, problem.charges, settings)
    return {
        "seconds": time.perf_counter() - begin,
        "iterations": state.iteration,
        "neighbourhood_preservation": neighbourhood_preservation(
            state.positions.numpy(), problem.true_neighbours
        ),
    }


# ---------------------------------------------------------------------------- fa2
def fa2_info() -> dict:
    import fa2.fa2util

    return {
        "package": "fa2",
        "version": importlib.metadata.version("fa2"),
        "compiled": not fa2.fa2util.__file__.endswith(".py"),
        "module": Path(fa2.fa2util.__file__).name,
    }


def run_fa2(problem: Problem, iterations: int) -> tuple[list[float], np.ndarray]:
    """Per-iteration wall times (from the end of the first iteration) and final positions."""
    from fa2 import ForceAtlas2

    layout = ForceAtlas2(backend="cython", barnesHutOptimize=True, verbose=False)
    stamps: list[float] = []
    positions = layout.forceatlas2(
        problem.adjacency,
        pos=problem.start(),
        iterations=iterations,
        callbacks=[lambda i, nodes: stamps.append(time.perf_counter())],
    )
    return list(np.diff(stamps)), np.asarray(positions)


# ---------------------------------------------------------------------------- sections
def compare(n: int, fa2_iterations: int) -> dict:
    problem = Problem(n)
    default = ForceSettings()
    report: dict[str, object] = {
        "nodes": n,
        "edges": len(problem.edges),
        "fa2": fa2_info(),
        "our_settings": {"theta": default.theta, "exponent": default.exponent},
    }
    if not report["fa2"]["compiled"]:
        raise SystemExit("fa2's Cython module is not compiled: timings would be meaningless")
    ours = our_step_seconds(problem, default)
    ours_half = our_step_seconds(problem, ForceSettings(theta=0.5))
    fa2_times, fa2_positions = run_fa2(problem, fa2_iterations + 1)
    fa2_seconds = float(np.median(fa2_times[1:]))  # the first timed one is the warm-up
    report["seconds_per_iteration"] = {
        "ours": ours,
        "ours_theta_0.5": ours_half,
        "fa2": fa2_seconds,
        "ratio_fa2_over_ours": fa2_seconds / ours,
        "ratio_fa2_over_ours_theta_0.5": fa2_seconds / ours_half,
    }
    budget = float(np.sum(fa2_times))
    report["equal_time"] = {
        "seconds": budget,
        "fa2": {
            "iterations": fa2_iterations + 1,
            "neighbourhood_preservation": neighbourhood_preservation(
                fa2_positions, problem.true_neighbours
            ),
        },
        "ours": our_layout_for(problem, budget, default),
        "start_neighbourhood_preservation": neighbourhood_preservation(
            problem.start(), problem.true_neighbours
        ),
    }
    return report


def scaling(sizes: list[int]) -> dict:
    settings = ForceSettings()
    rows = []
    for n in sizes:
        problem = Problem(n)
        positions = torch.from_numpy(problem.start()).float()
        reps = 7 if n <= 300_000 else 3
        rows.append(
            {
                "nodes": n,
                "repulsion_seconds": median_seconds(
                    lambda p=positions, q=problem.charges: repulsion(p, q, settings.theta),
                    warmup=1,
                    reps=reps,
                ),
                "repulsion_theta_0.5_seconds": median_seconds(
                    lambda p=positions, q=problem.charges: repulsion(p, q, 0.5),
                    warmup=1,
                    reps=reps,
                ),
                "step_seconds": our_step_seconds(problem, settings),
            }
        )
    for before, after in itertools.pairwise(rows):
        ratio = math.log(after["nodes"] / before["nodes"])
        for key in ("repulsion_seconds", "step_seconds"):
            growth = math.log(after[key] / before[key]) / ratio
            after[key.replace("seconds", "growth_exponent")] = growth
    return {"theta": ForceSettings().theta, "rows": rows}


def exponents(n: int = 5000, steps: int = 300) -> dict:
    problem = Problem(n)
    out = {}
    for exponent in (2.0, 2.5, 3.0):
        settings = ForceSettings(exponent=exponent)
        state = initial_state(
            torch.from_numpy(problem.start()).float(),
            problem.edges,
            problem.weights,
            problem.charges,
            settings,
        )
        curve = {}
        for i in range(1, steps + 1):
            state = simulation_step(
                state, problem.edges, problem.weights, problem.charges, settings
            )
            if i in (steps // 4, steps // 2, steps):
                curve[i] = neighbourhood_preservation(
                    state.positions.numpy(), problem.true_neighbours
                )
        out[str(exponent)] = curve
    return {"nodes": n, "neighbourhood_preservation_after_steps": out}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--nodes", type=int, default=50_000)
    parser.add_argument("--fa2-iterations", type=int, default=10)
    parser.add_argument("--scaling", action="store_true", help="10 k to 300 k nodes")
    parser.add_argument("--million", action="store_true", help="add 1 M nodes to --scaling")
    parser.add_argument("--exponents", action="store_true", help="quality per exponent")
    parser.add_argument("--no-compare", action="store_true", help="skip the fa2 comparison")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    report: dict[str, object] = {"machine": machine()}
    if not args.no_compare:
        report["compare"] = compare(args.nodes, args.fa2_iterations)
    if args.scaling:
        sizes = [10_000, 30_000, 100_000, 300_000] + ([1_000_000] if args.million else [])
        report["scaling"] = scaling(sizes)
    if args.exponents:
        report["exponents"] = exponents()

    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(json.dumps(report["machine"]))
    if "compare" in report:
        c = report["compare"]
        t = c["seconds_per_iteration"]
        print(f"\n{c['nodes']} nodes, {c['edges']} edges; fa2 {c['fa2']['version']} (compiled)")
        print(f"  ours  (theta {c['our_settings']['theta']}): {t['ours'] * 1e3:8.1f} ms/iteration")
        print(f"  ours  (theta 0.5): {t['ours_theta_0.5'] * 1e3:8.1f} ms/iteration")
        print(f"  fa2   (theta 1.2): {t['fa2'] * 1e3:8.1f} ms/iteration")
        print(
            f"  fa2 / ours: {t['ratio_fa2_over_ours']:.1f}x "
            f"(theta 0.5: {t['ratio_fa2_over_ours_theta_0.5']:.1f}x)"
        )
        e = c["equal_time"]
        print(f"  equal time ({e['seconds']:.1f} s), neighbourhood preservation (k = {K}):")
        print(f"    start: {e['start_neighbourhood_preservation']:.3f}")
        print(
            f"    fa2:   {e['fa2']['neighbourhood_preservation']:.3f} "
            f"after {e['fa2']['iterations']} iterations"
        )
        print(
            f"    ours:  {e['ours']['neighbourhood_preservation']:.3f} "
            f"after {e['ours']['iterations']} iterations"
        )
    if "scaling" in report:
        print(f"\nscaling (theta {report['scaling']['theta']}):")
        for row in report["scaling"]["rows"]:
            growth = row.get("step_growth_exponent")
            note = f"  growth x^{growth:.2f}" if growth else ""
            print(
                f"  {row['nodes']:>9,d} nodes: repulsion {row['repulsion_seconds'] * 1e3:8.1f} ms"
                f" (theta 0.5: {row['repulsion_theta_0.5_seconds'] * 1e3:8.1f} ms), "
                f"step {row['step_seconds'] * 1e3:8.1f} ms{note}"
            )
    if "exponents" in report:
        print(f"\nexponents ({report['exponents']['nodes']} nodes):")
        for exponent, curve in report["exponents"][
            "neighbourhood_preservation_after_steps"
        ].items():
            print(f"  {exponent}: " + ", ".join(f"{k} steps {v:.3f}" for k, v in curve.items()))


if __name__ == "__main__":
    main()
