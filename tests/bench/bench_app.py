"""The app's figures: time from the command to the first sound, and the stage's frames per
second while the engine runs.

Runs the real ``immersions`` command several times on a private Xvfb (software OpenGL) with
sound going to a private JACK dummy server, and reads the first-sound time the app logs;
then times the map with ``immersions bench``'s own measurement. Usage:

    .venv/bin/python tests/bench/bench_app.py [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.bench.common import machine
from tests.parts import JackServer, Xvfb


def first_sound_seconds(env: dict[str, str]) -> float:
    """Seconds from starting ``immersions`` to its first sound (as the app logs it)."""
    command = [sys.executable, "-m", "app.cli", "--quit-after", "5", "--output-device", "JACK"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    line = next((x for x in done.stderr.splitlines() if "first sound" in x), None)
    if line is None:
        raise RuntimeError(f"the app did not report its first sound: {done.stderr[-1000:]}")
    return float(line.split("first sound ")[1].split(" s")[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--render-seconds", type=float, default=10.0)
    args = parser.parse_args()
    print(machine())
    with Xvfb() as display, JackServer() as jack, tempfile.TemporaryDirectory() as config:
        env = {**os.environ, **display.env, **jack.env, "QT_QPA_PLATFORM": "xcb"}
        env["IMMERSIONS_CONFIG_DIR"] = config  # each run starts from the defaults
        starts = []
        for run in range(args.runs):
            for leftover in Path(config).glob("*"):
                leftover.unlink()
            starts.append(first_sound_seconds(env))
            print(f"run {run + 1}: first sound after {starts[-1]:.2f} s")
        print(f"first sound: median {statistics.median(starts):.2f} s (goal <= 10 s)")
        command = [sys.executable, "-m", "app.cli", "bench", "--json", "--output-device"]
        command += ["JACK", "--audio-seconds", "5", "--step-seconds", "1"]
        command += ["--render-seconds", str(args.render_seconds)]
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
        report = json.loads(done.stdout)
        print(f"render_fps {report['render_fps']:.1f} (goal >= 30): {report['render_note']}")


if __name__ == "__main__":
    main()
