"""The benchmarks' shared helpers live in the engine, where `immersions bench` uses them."""

from engine.machine import cpu_model, machine, median_seconds

__all__ = ["cpu_model", "machine", "median_seconds"]
