"""MIDI control of the instrument: mappings, decoding, pick-up, ports (no Qt here)."""
