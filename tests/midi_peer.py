"""A second process on the JACK MIDI graph for the tests: a controller's two ports.

Run as ``python -m tests.midi_peer NAME``. It opens ``NAME:out`` (what the controller
sends) and ``NAME back:in`` (what comes back to it; JACK gives each rtmidi object a client
of its own) and reads one JSON command per line:

- ``{"send": [[176, 81, 64], ...], "gap": 0.005}``: send each message, ``gap`` s apart,
  and print ``{"sent": [t, ...]}`` (``time.perf_counter`` just before each send);
- ``{"flood": [[...], ...], "seconds": 1.0}``: send the messages evenly over the seconds;
- ``{"quit": true}``.

Every message that arrives on ``NAME back:in`` is printed as ``{"got": [bytes], "t": t}``.
The first line printed is ``{"ready": true}``.
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import rtmidi

ROOT = Path(__file__).resolve().parent.parent

_print_lock = threading.Lock()


def say(document: object) -> None:
    with _print_lock:
        print(json.dumps(document), flush=True)


def main(name: str) -> None:
    api = rtmidi.API_UNIX_JACK
    out = rtmidi.MidiOut(api, name=name)
    out.open_virtual_port("out")
    back = rtmidi.MidiIn(api, name=f"{name} back")
    back.ignore_types(sysex=False, timing=False, active_sense=False)
    back.set_callback(lambda event, _: say({"got": event[0], "t": time.perf_counter()}))
    back.open_virtual_port("in")
    say({"ready": True})
    for line in sys.stdin:
        command = json.loads(line)
        if command.get("quit"):
            break
        if "send" in command:
            sent = []
            for data in command["send"]:
                sent.append(time.perf_counter())
                out.send_message(data)
                time.sleep(command.get("gap", 0.0))
            say({"sent": sent})
        if "flood" in command:
            messages = command["flood"]
            start = time.perf_counter()
            every = command["seconds"] / max(len(messages), 1)
            for i, data in enumerate(messages):
                delay = start + i * every - time.perf_counter()
                if delay > 0.0005:
                    time.sleep(delay)
                out.send_message(data)
            say({"flooded": len(messages), "took": time.perf_counter() - start})
    back.close_port()
    out.close_port()


class Peer:
    """The test's side: the peer process started, its lines read in a thread."""

    def __init__(self, name: str = "Peer") -> None:
        self.name = name
        self.lines: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
        self.got: list[tuple[list[int], float]] = []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.midi_peer", name],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()
        assert self.next("ready", 20.0)

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            document = json.loads(line)
            if "got" in document:
                self.got.append((document["got"], document["t"]))
            else:
                self.lines.put(document)

    def next(self, key: str, timeout: float = 20.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            document = self.lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            if key in document:
                return document[key]

    def command(self, **document: Any) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(document) + "\n")
        self.process.stdin.flush()

    def send(self, messages: list[list[int]], gap: float = 0.002) -> list[float]:
        self.command(send=messages, gap=gap)
        return self.next("sent")

    def quit(self) -> None:
        if self.process.poll() is None:
            self.command(quit=True)
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "Peer")
