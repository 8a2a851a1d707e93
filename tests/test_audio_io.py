"""engine.audio_io: odd files load as mono float32 at the asked rate, or are refused clearly."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from engine.audio_io import AUDIO_EXTENSIONS, AudioFileError, audio_info, load_audio
from tests.synthetic import ODD_RATE, ODD_SECONDS, SINE_HZ, sine, write_odd_files

# Lossy codecs shift phase and add ringing; they are checked by spectrum, not sample by sample.
EXACT = {
    "pcm_u8": 1 / 128,
    "pcm_16": 1 / 2**15,
    "pcm_24": 1e-6,
    "pcm_32": 1e-6,
    "float32": 1e-7,
    "float64": 1e-7,
    "flac": 1 / 2**15,
}
LOSSY = ("ogg", "mp3")
REFUSED = {
    "corrupt": "corrupt",
    "text": "corrupt",
    "empty": "empty",
    "nonfinite": "non-finite",
}


@pytest.fixture(scope="module")
def odd(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_odd_files(tmp_path_factory.mktemp("odd"))


def assert_one_sentence_naming(message: str, path: Path) -> None:
    """The house rule for bad files: one sentence, and it names the file."""
    assert str(path) in message
    rest = message.replace(str(path), "PATH")
    assert "\n" not in rest
    assert rest.endswith(".")
    assert not re.search(r"[.!?]\s", rest[:-1]), f"more than one sentence: {message!r}"


def dominant_hz(audio: np.ndarray, sample_rate: int) -> float:
    """Frequency of the largest spectral peak (Hann-windowed, zero-padded for resolution)."""
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio)), n=16 * len(audio)))
    return float(np.argmax(spectrum) * sample_rate / (16 * len(audio)))


@pytest.mark.parametrize("name", sorted(EXACT))
def test_bit_depths_and_flac_decode_to_the_written_sine(odd: dict[str, Path], name: str) -> None:
    audio = load_audio(odd[name], ODD_RATE)
    assert audio.dtype == np.float32 and audio.ndim == 1
    np.testing.assert_allclose(audio, sine(), atol=EXACT[name])


@pytest.mark.parametrize("name", LOSSY)
def test_lossy_files_decode_to_a_sine_of_the_right_pitch_and_length(
    odd: dict[str, Path], name: str
) -> None:
    audio = load_audio(odd[name], ODD_RATE)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(len(audio) - ODD_SECONDS * ODD_RATE) <= 0.05 * ODD_RATE
    assert dominant_hz(audio, ODD_RATE) == pytest.approx(SINE_HZ, abs=2.0)
    assert np.sqrt(np.mean(audio**2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.15)


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_bad_files_are_refused_with_one_sentence_naming_them(
    odd: dict[str, Path], name: str
) -> None:
    with pytest.raises(AudioFileError) as caught:
        load_audio(odd[name], ODD_RATE)
    assert_one_sentence_naming(str(caught.value), odd[name])
    assert REFUSED[name] in str(caught.value)
    assert caught.value.path == odd[name]
    assert isinstance(caught.value, ValueError)


def test_missing_file_and_folder_are_refused_with_one_sentence(tmp_path: Path) -> None:
    for path, words in ((tmp_path / "nope.wav", "does not exist"), (tmp_path, "folder")):
        with pytest.raises(AudioFileError, match=words) as caught:
            load_audio(path, ODD_RATE)
        assert_one_sentence_naming(str(caught.value), path)


@pytest.mark.parametrize("name", ["rate_44100", "rate_8000"])
def test_resampling_keeps_a_sines_frequency_and_duration(odd: dict[str, Path], name: str) -> None:
    audio = load_audio(odd[name], ODD_RATE)
    assert len(audio) == round(ODD_SECONDS * ODD_RATE)
    assert dominant_hz(audio, ODD_RATE) == pytest.approx(SINE_HZ, abs=1.0)
    middle = slice(500, -500)  # away from the resampler's edge transients
    np.testing.assert_allclose(audio[middle], sine()[middle], atol=2e-3)


def test_resampling_to_another_rate_keeps_the_frequency(odd: dict[str, Path]) -> None:
    audio = load_audio(odd["pcm_16"], 16000)
    assert len(audio) == round(ODD_SECONDS * 16000)
    assert dominant_hz(audio, 16000) == pytest.approx(SINE_HZ, abs=1.0)


def test_stereo_is_mixed_to_mono_by_averaging_the_channels(odd: dict[str, Path]) -> None:
    left_right, _ = sf.read(odd["stereo"], dtype="float32")
    assert left_right.shape[1] == 2
    audio = load_audio(odd["stereo"], ODD_RATE)
    np.testing.assert_allclose(audio, left_right.mean(axis=1), atol=1e-7)
    np.testing.assert_allclose(audio, 0.8 * sine(), atol=1e-6)  # (1.2 + 0.4) / 2


def test_a_10ms_file_loads_and_resamples(odd: dict[str, Path]) -> None:
    native = load_audio(odd["short_10ms"], ODD_RATE)
    assert len(native) == round(0.01 * ODD_RATE)
    assert len(load_audio(odd["short_10ms"], 2 * ODD_RATE)) == 2 * len(native)


def test_audio_info_reads_rate_channels_frames_and_duration(odd: dict[str, Path]) -> None:
    info = audio_info(odd["stereo"])
    assert (info.sample_rate, info.channels, info.frames) == (ODD_RATE, 2, ODD_RATE // 2)
    assert info.duration == pytest.approx(ODD_SECONDS)
    assert audio_info(odd["rate_8000"]).sample_rate == 8000
    assert audio_info(odd["flac"]).format == "FLAC"


def test_audio_info_refuses_a_corrupt_file_with_one_sentence(odd: dict[str, Path]) -> None:
    with pytest.raises(AudioFileError) as caught:
        audio_info(odd["corrupt"])
    assert_one_sentence_naming(str(caught.value), odd["corrupt"])


def test_every_odd_file_has_an_audio_extension(odd: dict[str, Path]) -> None:
    assert all(path.suffix in AUDIO_EXTENSIONS for path in odd.values())


def test_nonpositive_sample_rate_is_a_programming_error(odd: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match="sample_rate"):
        load_audio(odd["pcm_16"], 0)
