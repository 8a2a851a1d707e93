"""Layout files: the map's precomputed positions, keyed by the model they were computed for,
so the app starts at once and recomputes only when the model changes.

A layout file is a safetensors file (nothing is ever unpickled). Tensors: ``positions``
(T, N, 2) float32, one layout per time position; ``time_positions`` (T,) float32; and
optionally ``reference`` (N, 2), ``level.<i>`` (n_i, 2) per coarsening level, ``edges``
(E, 2) int64 and ``edge_weights`` (E,) float32 for drawing. String metadata: ``format``,
``version`` and ``header``, a JSON object with the model's hash, the node count, the time
positions, the library version, the creation time and the caller's ``metadata`` (by
convention ``layer_names`` and the layout's ``settings``).
"""

from __future__ import annotations

import datetime
import hashlib
import json
from dataclasses import dataclass, field
from importlib import metadata as package_metadata
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from engine.atomic import atomic_path, make_shareable
from engine.messages import first_line
from engine.model import CPCModel

FORMAT = "immersions-layout"
VERSION = 1

# A header longer than this is not one this module wrote: the file is something else.
_MAX_HEADER_BYTES = 100_000_000


class LayoutFileError(ValueError):
    """A layout file that cannot be used; the message is one sentence naming the file."""


@dataclass(frozen=True)
class LayoutData:
    """What a layout file holds: positions (T, N, 2) of the N nodes at each of the T time
    positions (fractions of the loop, increasing), for the model with hash ``model_hash``.

    ``metadata`` is JSON data (by convention ``layer_names`` and ``settings``), kept in its
    JSON form so that it round-trips exactly. ``reference`` (N, 2) is the layout the time
    positions were re-simulated from, ``levels`` the positions of each coarsening level,
    ``edges``/``edge_weights`` a (thinned) edge list for drawing.
    """

    positions: torch.Tensor
    time_positions: torch.Tensor
    model_hash: str
    metadata: dict[str, Any] = field(default_factory=dict)
    reference: torch.Tensor | None = None
    levels: tuple[torch.Tensor, ...] = ()
    edges: torch.Tensor | None = None
    edge_weights: torch.Tensor | None = None

    def __post_init__(self) -> None:
        problem = _layout_problem(self)
        if problem is not None:
            raise ValueError(f"invalid layout: {problem}")
        object.__setattr__(self, "metadata", json.loads(json.dumps(self.metadata)))
        object.__setattr__(self, "levels", tuple(self.levels))

    @property
    def num_nodes(self) -> int:
        return int(self.positions.shape[1])

    @property
    def num_times(self) -> int:
        return int(self.positions.shape[0])


def _layout_problem(layout: LayoutData) -> str | None:
    """What is wrong with a layout, as a clause, or None."""
    positions, times = layout.positions, layout.time_positions
    if not _is(positions, torch.float32, 3) or positions.shape[2] != 2 or 0 in positions.shape:
        return f"positions must be a (T, N, 2) float32 tensor, not {_describe(positions)}"
    count, nodes = positions.shape[:2]
    if not bool(torch.isfinite(positions).all()):
        return "the positions contain NaN or Inf"
    if not _is(times, torch.float32, 1) or times.shape[0] != count:
        return f"time_positions must be ({count},) float32, not {_describe(times)}"
    if not bool(torch.isfinite(times).all()) or bool((times.diff() <= 0).any()):
        return "the time positions must be finite and increasing"
    if not isinstance(layout.model_hash, str) or not layout.model_hash:
        return "the model hash must be a non-empty string"
    if layout.reference is not None:
        reference = layout.reference
        if not _is(reference, torch.float32, 2) or tuple(reference.shape) != (nodes, 2):
            return f"the reference must be ({nodes}, 2) float32, not {_describe(reference)}"
        if not bool(torch.isfinite(reference).all()):
            return "the reference positions contain NaN or Inf"
    for i, level in enumerate(layout.levels):
        if not _is(level, torch.float32, 2) or level.shape[1] != 2 or level.shape[0] == 0:
            return f"level {i} must be an (n, 2) float32 tensor, not {_describe(level)}"
        if not bool(torch.isfinite(level).all()):
            return f"the positions of level {i} contain NaN or Inf"
    problem = _edges_problem(layout.edges, layout.edge_weights, nodes)
    if problem is not None:
        return problem
    if not isinstance(layout.metadata, dict):
        return f"the metadata must be a dict, not {type(layout.metadata).__name__}"
    try:
        json.dumps(layout.metadata, allow_nan=False)
    except (TypeError, ValueError) as error:
        return f"the metadata is not JSON data ({error})"
    return None


def _edges_problem(
    edges: torch.Tensor | None, weights: torch.Tensor | None, nodes: int
) -> str | None:
    if edges is None:
        return "edge weights are given without edges" if weights is not None else None
    if not _is(edges, torch.int64, 2) or edges.shape[1] != 2:
        return f"the edges must be an (E, 2) int64 tensor, not {_describe(edges)}"
    if edges.numel() and (int(edges.min()) < 0 or int(edges.max()) >= nodes):
        return f"an edge names a node outside 0..{nodes - 1}"
    if weights is not None:
        if not _is(weights, torch.float32, 1) or weights.shape[0] != edges.shape[0]:
            return f"the edge weights must be ({edges.shape[0]},) float32, not {_describe(weights)}"
        if not bool(torch.isfinite(weights).all()):
            return "the edge weights contain NaN or Inf"
    return None


def _is(tensor: Any, dtype: torch.dtype, dims: int) -> bool:
    return isinstance(tensor, torch.Tensor) and tensor.dtype == dtype and tensor.dim() == dims


def _describe(tensor: Any) -> str:
    if not isinstance(tensor, torch.Tensor):
        return type(tensor).__name__
    return f"{tuple(tensor.shape)} {str(tensor.dtype).removeprefix('torch.')}"


def model_hash(model: CPCModel) -> str:
    """A stable hex digest of what a layout depends on: the model's config, every tensor of
    its state dict and its normalisation statistics (which set the charges), if any.

    Independent of the device the model is on; sha256 over a few MB, so milliseconds.
    """
    digest = hashlib.sha256()
    digest.update(json.dumps(model.config.to_dict(), sort_keys=True).encode())
    for name, tensor in sorted(model.state_dict().items()):
        _update(digest, f"model.{name}", tensor)
    statistics = getattr(model, "statistics", None)
    if statistics is not None:
        for layer in sorted(statistics.data_std):
            _update(digest, f"stats.{layer}.data_std", statistics.data_std[layer])
            _update(digest, f"stats.{layer}.silence_mean", statistics.silence_mean[layer])
    return digest.hexdigest()


def _update(digest: Any, name: str, tensor: torch.Tensor) -> None:
    # The name, dtype and shape go in too, so that equal bytes under another key differ.
    tensor = tensor.detach().cpu().contiguous().reshape(-1)
    digest.update(f"\0{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
    digest.update(tensor.view(torch.uint8).numpy())


def save_layout(path: str | Path, layout: LayoutData) -> Path:
    """Write the layout atomically (a reader sees the old file or the new one, never half)."""
    path = Path(path)
    tensors = {
        "positions": layout.positions,
        "time_positions": layout.time_positions,
    }
    if layout.reference is not None:
        tensors["reference"] = layout.reference
    for i, level in enumerate(layout.levels):
        tensors[f"level.{i}"] = level
    if layout.edges is not None:
        tensors["edges"] = layout.edges
    if layout.edge_weights is not None:
        tensors["edge_weights"] = layout.edge_weights
    # Clones: safetensors refuses tensors sharing memory (a reference that is positions[0]).
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    header = {
        "model_hash": layout.model_hash,
        "num_nodes": layout.num_nodes,
        "time_positions": layout.time_positions.tolist(),
        "levels": len(layout.levels),
        "library_version": _library_version(),
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "metadata": layout.metadata,
    }
    metadata = {"format": FORMAT, "version": str(VERSION), "header": json.dumps(header)}
    with atomic_path(path) as tmp:
        save_file(tensors, tmp, metadata=metadata)
        make_shareable(tmp)
    return path


def _library_version() -> str:
    try:
        return package_metadata.version("immersions")
    except package_metadata.PackageNotFoundError:
        return "unknown"


def layout_header(path: str | Path) -> dict[str, Any]:
    """The JSON header of a layout file, without reading its arrays: enough to tell at app
    start whether it belongs to the model (``model_hash``). Refuses anything that is not a
    readable layout file of this version with a LayoutFileError."""
    path = Path(path)
    _sniff(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise _error(path, f"is truncated or corrupt ({first_line(error)})") from None
    return _header(path, metadata)


def _sniff(path: Path) -> None:
    """Refuse missing, foreign and truncated files before the safetensors reader sees them."""
    if not path.exists():
        raise _error(path, "does not exist")
    if not path.is_file():
        raise _error(path, "is not a file")
    size = path.stat().st_size
    with path.open("rb") as f:
        start = f.read(9)
    if len(start) < 9:
        raise _error(path, f"is too short to be a layout file ({size} bytes: empty or truncated)")
    header_bytes = int.from_bytes(start[:8], "little")
    if header_bytes > _MAX_HEADER_BYTES or start[8:9] != b"{":
        raise _error(path, "is not a layout file (it is not in the safetensors format)")
    if 8 + header_bytes > size:
        raise _error(path, "is truncated (its header runs past the end of the file)")


def _header(path: Path, metadata: dict[str, str]) -> dict[str, Any]:
    if metadata.get("format") != FORMAT:
        raise _error(
            path,
            f"is a safetensors file but not an Immersions layout "
            f"(format {metadata.get('format')!r}, expected {FORMAT!r})",
        )
    if metadata.get("version") != str(VERSION):
        raise _error(
            path,
            f"is a layout of version {metadata.get('version')!r}, "
            f"this program reads version {VERSION}; it must be recomputed",
        )
    try:
        header = json.loads(metadata["header"])
    except (KeyError, json.JSONDecodeError):
        header = None
    if not isinstance(header, dict) or not isinstance(header.get("model_hash"), str):
        raise _error(path, "is corrupt (its JSON header is missing or unreadable)")
    if not isinstance(header.get("num_nodes"), int) or not isinstance(header.get("levels"), int):
        raise _error(path, "is corrupt (its header lacks the node or level count)")
    return header


def load_layout(
    path: str | Path, expected_hash: str | None = None, expected_nodes: int | None = None
) -> LayoutData:
    """Read and check a layout file; with ``expected_hash`` (``model_hash`` of the model in
    use) a layout of another model is refused as stale, with ``expected_nodes`` one of
    another node count. Every problem is a LayoutFileError of one sentence naming the file.
    """
    path = Path(path)
    _sniff(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            header = _header(path, metadata)
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        if isinstance(error, LayoutFileError):
            raise
        raise _error(path, f"is truncated or corrupt ({first_line(error)})") from None
    if expected_hash is not None and header["model_hash"] != expected_hash:
        raise _error(
            path,
            f"is stale: it was computed for another model (hash {header['model_hash'][:12]}…, "
            f"the model in use has {expected_hash[:12]}…) and must be recomputed",
        )
    missing = [k for k in ("positions", "time_positions") if k not in tensors]
    missing += [f"level.{i}" for i in range(header["levels"]) if f"level.{i}" not in tensors]
    if missing:
        raise _error(path, f"is corrupt (it has no {', '.join(missing)})")
    try:
        layout = LayoutData(
            positions=tensors["positions"],
            time_positions=tensors["time_positions"],
            model_hash=header["model_hash"],
            metadata=header.get("metadata", {}),
            reference=tensors.get("reference"),
            levels=tuple(tensors[f"level.{i}"] for i in range(header["levels"])),
            edges=tensors.get("edges"),
            edge_weights=tensors.get("edge_weights"),
        )
    except ValueError as error:
        raise _error(path, f"is unusable: {str(error).removeprefix('invalid layout: ')}") from None
    if layout.num_nodes != header["num_nodes"]:
        raise _error(
            path,
            f"is corrupt: its header says {header['num_nodes']} nodes, "
            f"its positions have {layout.num_nodes}",
        )
    if expected_nodes is not None and layout.num_nodes != expected_nodes:
        raise _error(
            path,
            f"has {layout.num_nodes} nodes, the graph to draw has {expected_nodes}; "
            "it must be recomputed",
        )
    return layout


def _error(path: Path, what: str) -> LayoutFileError:
    return LayoutFileError(f"layout file {path} {what}")
