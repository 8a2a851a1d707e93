"""The MIDI figure: latency from a CC leaving a sender port to the engine's parameter
changing, with the instrument playing to a private JACK dummy server and the engine
stepping; against the floor of the same JACK MIDI loop-back with nothing behind it (the
sender's message arriving in an rtmidi callback of the same process). Usage:

    .venv/bin/python tests/bench/bench_midi.py [--messages 1000] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.bench.common import machine
from tests.parts import JackServer


def loopback_floor(messages: int, gap: float) -> dict[str, float]:
    """p50/p99 of JACK MIDI alone: virtual out → rtmidi input callback, same process."""
    import threading

    import rtmidi

    api = rtmidi.API_UNIX_JACK
    sender = rtmidi.MidiOut(api, name="Floor sender")
    sender.open_virtual_port("out")
    receiver = rtmidi.MidiIn(api, name="Floor receiver")
    arrived = threading.Event()
    receiver.set_callback(lambda _event, _data: arrived.set())
    receiver.open_port(receiver.get_ports().index("Floor sender:out"), "in")
    time.sleep(0.2)
    latencies = []
    for i in range(messages):
        arrived.clear()
        began = time.perf_counter()
        sender.send_message([0xB0, 85, i % 128])
        if arrived.wait(1.0):
            latencies.append((time.perf_counter() - began) * 1000.0)
        time.sleep(gap)
    for port in (receiver, sender):
        port.close_port()
        port.delete()  # frees the client's name for the next run
    ordered = sorted(latencies)
    return {
        "p50_ms": round(statistics.median(ordered), 3),
        "p99_ms": round(ordered[int(0.99 * (len(ordered) - 1))], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(machine())
    with JackServer() as jack:
        os.environ.update(jack.env)
        os.environ["IMMERSIONS_MIDI_API"] = "jack"
        from engine.audio_io import load_audio
        from engine.checkpoint import load_model
        from engine.clips import list_default_clips
        from engine.instrument import Instrument
        from midi.bench import measure_midi_latency

        period_ms = 1000.0 * jack.period / jack.sample_rate
        rate = jack.sample_rate
        print(f"JACK dummy server: {jack.period} frames at {rate} Hz ({period_ms:.2f} ms)")
        model = load_model(device="cpu")
        clips = list_default_clips()
        origin = load_audio(clips[0], model.config.front_end.sample_rate)
        for run in range(args.runs):
            floor = loopback_floor(args.messages, 0.005)
            instrument = Instrument(model, origin, clips=clips, output_device="JACK")
            instrument.start()
            try:
                steps = instrument.engine.latest.step if instrument.engine.latest else 0
                figures = measure_midi_latency(
                    instrument.engine, instrument.set, messages=args.messages
                )
                stepped = (instrument.engine.latest.step if instrument.engine.latest else 0) - steps
                xruns = instrument.audio_status.xruns
            finally:
                instrument.stop()
            figures.update(
                floor_p50_ms=floor["p50_ms"],
                floor_p99_ms=floor["p99_ms"],
                p99_over_floor=round(figures["midi_latency_p99_ms"] / floor["p99_ms"], 2),
                engine_steps_meanwhile=stepped,
                audio_xruns=xruns,
                goal_p99_ms=round(10.0 + period_ms, 2),
            )
            print(f"run {run + 1}: {json.dumps(figures)}")


if __name__ == "__main__":
    main()
