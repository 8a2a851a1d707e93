"""A model's whole map: the reference layout, one layout per time position, and the file.

``build_layout`` is what ``immersions layout`` runs and what the app runs when the layout
file is missing or belongs to another model: the model's graph laid out by the multilevel
method, then, for each time position of the loop, the same graph with charges measured
around that position, relaxed from the reference layout, so the per-time layouts differ
only where the music moves them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from engine.checkpoint import DEFAULT_MODEL
from engine.model import CPCModel
from layout.breathing import time_positions, windowed_charges
from layout.files import LayoutData, LayoutFileError, load_layout, model_hash, save_layout
from layout.graph import graph_from_model
from layout.multilevel import MultilevelSettings, layout, relax

__all__ = ["DEFAULT_LAYOUT", "build_layout", "layout_for"]

#: The shipped model's layout, beside it in assets/.
DEFAULT_LAYOUT = DEFAULT_MODEL.parent.parent / "layouts" / "default.safetensors"
#: Time positions per loop.
TIME_POSITIONS = 8
#: Steps each time position's layout is relaxed from the reference.
TIME_STEPS = 60
#: Their first step size: small, so a time position's layout stays near the reference and
#: moves only where its charges differ (the default first step, for layouts from scratch,
#: would move nodes by half the map's size).
TIME_FIRST_STEP = 0.05
#: Edges kept per node in the file, for drawing.
DRAWN_EDGES_PER_NODE = 8

Progress = Callable[[str, int, int], None]


def build_layout(
    model: CPCModel,
    clips: Sequence[np.ndarray],
    *,
    times: int = TIME_POSITIONS,
    settings: MultilevelSettings | None = None,
    time_steps: int = TIME_STEPS,
    seed: int = 0,
    device: torch.device | str | None = None,
    progress: Progress | None = None,
) -> LayoutData:
    """The reference layout and ``times`` per-time layouts of ``model``'s graph, each
    relaxed ``time_steps`` steps from the reference with its own charges."""
    settings = settings or MultilevelSettings()
    graph = graph_from_model(model)
    say = progress or (lambda _what, _done, _total: None)
    reference = layout(graph, settings, seed=seed, device=device, progress=say)
    charges = windowed_charges(model, clips, times) if clips else None
    gentle = dataclasses.replace(
        settings, forces=dataclasses.replace(settings.forces, step=TIME_FIRST_STEP)
    )
    per_time = []
    for k in range(times):
        say(f"time position {k + 1}/{times}", k, times)
        timed = graph if charges is None else graph.with_charges(charges[k])
        per_time.append(relax(timed, reference.clone(), gentle, steps=time_steps))
    drawn = graph.thinned(DRAWN_EDGES_PER_NODE, seed=seed)
    return LayoutData(
        positions=torch.stack(per_time).float(),
        time_positions=time_positions(times),
        model_hash=model_hash(model),
        metadata={
            "model": model.config.name,
            "nodes": graph.num_nodes,
            "edges": graph.num_edges,
            "layers": list(graph.layer_names),
            "seed": seed,
            "time_steps": time_steps,
            "time_first_step": TIME_FIRST_STEP,
        },
        reference=reference.float(),
        edges=drawn.edges,
        edge_weights=drawn.weights,
    )


def layout_for(
    model: CPCModel,
    path: str | Path,
    clips: Sequence[np.ndarray],
    progress: Progress | None = None,
    report: Callable[[str], None] | None = None,
    **build_options: object,
) -> LayoutData:
    """The layout in ``path`` when it belongs to ``model``; otherwise (missing, broken or
    stale, said in one sentence to ``report``) a new one, computed and saved there.
    ``build_options`` go to :func:`build_layout`."""
    expected = model_hash(model)
    try:
        return load_layout(path, expected_hash=expected)
    except LayoutFileError as error:
        if report is not None:
            report(f"{error} It is computed again.")
    data = build_layout(model, clips, progress=progress, **build_options)  # type: ignore[arg-type]
    save_layout(path, data)
    return data
