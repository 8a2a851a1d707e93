"""The training-corpus builder: music that the package registries carry, rendered to audio.

- :mod:`engine.corpus.pieces`: the music21 corpus's collections, scores and their notes;
- :mod:`engine.corpus.midi_render`: a score to audio with FluidSynth, in one instrument family;
- :mod:`engine.corpus.beats`: beats, basslines, loops and tabla from sonic-pi's recordings;
- :mod:`engine.corpus.audio`: trimming, levelling and writing files atomically;
- :mod:`engine.corpus.build`: the plan, the split, the process pool, the manifest, the CLI.

Use :func:`build_corpus` from code, or ``immersions corpus build DIR`` (added to a command
line by :func:`add_corpus_commands`).
"""

from engine.corpus.build import CorpusError, CorpusReport, add_corpus_commands, build_corpus

__all__ = ["CorpusError", "CorpusReport", "add_corpus_commands", "build_corpus"]
