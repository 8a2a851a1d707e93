"""The loop arithmetic (engine.loop): crossfades, loop length, gain ramps, no allocation."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from engine.loop import LoopSequencer, db_to_gain, frames_for_ms, prepare_clip


def expected_sequence(clips: list[np.ndarray], fade: int, repeats_of_last: int = 0) -> np.ndarray:
    """What a sequencer plays when clip k enters at boundary k (clip 0 from silence).

    Written independently of the sequencer: loop k = clip k, its first ``fade`` frames
    mixed linearly with the previous clip's first frames (w = i / fade).
    """
    loops = []
    previous = np.zeros_like(clips[0], dtype=np.float64)
    for clip in [*clips, *[clips[-1]] * repeats_of_last]:
        loop = clip.astype(np.float64)
        if clip is not previous:
            n = min(fade, len(clip), len(previous))
            w = np.arange(n) / n
            loop[:n] = previous[:n] * (1 - w) + clip[:n] * w
        loops.append(loop)
        previous = clip
    return np.concatenate(loops)


def play(
    seq: LoopSequencer,
    frames: int,
    block: int,
    submissions: dict[int, np.ndarray] | None = None,
    channels: int = 0,
) -> np.ndarray:
    """Fill `frames` frames in blocks of `block`, submitting clips at given output frames.

    A submission at frame f happens before the block that starts at or after f.
    """
    pending = sorted((submissions or {}).items())
    shape = (block,) if channels == 0 else (block, channels)
    buffer = np.zeros(shape, dtype=np.float32)
    out = []
    done = 0
    while done < frames:
        while pending and pending[0][0] <= done:
            seq.submit(pending.pop(0)[1])
        seq.fill(buffer)
        out.append(buffer.copy())
        done += block
    return np.concatenate(out)[:frames]


def noise_clips(count: int, length: int, seed: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(0.5 * rng.standard_normal(length)).astype(np.float32) for _ in range(count)]


def test_constant_clips_give_linear_ramps_at_the_boundaries() -> None:
    seq = LoopSequencer(crossfade=100)
    a, b = np.full(1000, 1.0, np.float32), np.full(1000, 0.5, np.float32)
    out = play(seq, 3000, block=37, submissions={0: a, 400: b})
    i = np.arange(100)
    # The first clip fades in from silence, then plays unchanged.
    np.testing.assert_allclose(out[:100], i / 100, atol=1e-7)
    np.testing.assert_allclose(out[100:1000], 1.0)
    # At the boundary A's continuation fades out while B fades in, then B alone.
    np.testing.assert_allclose(out[1000:1100], 1.0 - 0.5 * i / 100, atol=1e-7)
    np.testing.assert_allclose(out[1100:3000], 0.5)
    assert seq.clips_entered == 2 and seq.loops_played == 3


@pytest.mark.parametrize("block", [1, 37, 256, 1000, 4096, 5000])
def test_clip_sequence_is_the_same_for_any_block_size(block: int) -> None:
    length, fade = 12_000, 300  # block sizes that do not divide the loop, and one > max_block
    clips = noise_clips(4, length)
    # Clip k is submitted just after boundary k − 1, so it enters at boundary k.
    submissions = {max(0, (k - 1) * length + 1): clip for k, clip in enumerate(clips)}
    seq = LoopSequencer(crossfade=fade, max_block=4096)
    out = play(seq, 5 * length, block, submissions)
    expected = expected_sequence(clips, fade, repeats_of_last=1)
    np.testing.assert_allclose(out, expected, atol=2e-7)


def test_loop_length_is_kept_and_the_newest_submission_wins() -> None:
    length = 1000
    clips = noise_clips(3, length)
    seq = LoopSequencer(crossfade=200)
    block = np.zeros(256, np.float32)
    seq.submit(clips[0])
    seq.fill(block)
    seq.submit(clips[1])
    seq.submit(clips[2])  # replaces clips[1] before the boundary
    assert seq.pending
    seq.fill(block)
    seq.fill(block)
    assert seq.frames_to_boundary == length - 3 * 256
    assert seq.position == pytest.approx(3 * 256 / length)
    # Across two boundaries: clips[1] never plays; clips[2] starts exactly at frame 1000.
    tail = np.zeros(length + 300, np.float32)
    seq.fill(tail)
    expected = expected_sequence([clips[0], clips[2]], 200, repeats_of_last=1)[3 * 256 :]
    np.testing.assert_allclose(tail, expected[: len(tail)], atol=2e-7)
    assert seq.clips_entered == 2 and not seq.pending and seq.loops_played == 2
    assert seq.position == pytest.approx((3 * 256 + len(tail) - 2 * length) / length)


def test_clips_of_other_lengths_and_fades_longer_than_a_clip() -> None:
    short, long = noise_clips(1, 300)[0], noise_clips(1, 700, seed=2)[0]
    seq = LoopSequencer(crossfade=500)  # longer than the short clip: limited to 300
    out = play(seq, 300 + 700 + 700, block=64, submissions={0: short, 10: long})
    expected = expected_sequence([short, long], 500, repeats_of_last=1)
    np.testing.assert_allclose(out, expected, atol=2e-7)
    assert seq.loop_length == 700


def test_one_clip_loops_seamlessly_and_silence_before_any_clip() -> None:
    seq = LoopSequencer(crossfade=0)
    silence = np.ones(500, np.float32)
    seq.fill(silence)
    assert not silence.any() and seq.position == 0.0 and seq.frames_to_boundary == 0
    clip = noise_clips(1, 1000)[0]
    out = play(seq, 3500, block=333, submissions={0: clip})
    np.testing.assert_array_equal(out, np.tile(clip, 4)[:3500])


def test_all_channels_get_the_same_signal() -> None:
    clip = noise_clips(1, 900)[0]
    stereo = play(LoopSequencer(crossfade=90), 2000, 128, {0: clip}, channels=2)
    mono = play(LoopSequencer(crossfade=90), 2000, 128, {0: clip})
    np.testing.assert_array_equal(stereo[:, 0], mono)
    np.testing.assert_array_equal(stereo[:, 1], mono)


def test_sequencer_is_deterministic() -> None:
    clips = noise_clips(3, 1500)
    submissions = {k * 1600: clip for k, clip in enumerate(clips)}

    def run() -> np.ndarray:
        seq = LoopSequencer(crossfade=120, gain_ramp=64)
        seq.set_gain_db(-3.0)
        return play(seq, 6000, 100, submissions)

    np.testing.assert_array_equal(run(), run())


def test_gain_change_ramps_linearly() -> None:
    seq = LoopSequencer(crossfade=0, gain_ramp=100)
    seq.submit(np.ones(1000, np.float32))
    head = np.zeros(50, np.float32)
    seq.fill(head)
    np.testing.assert_array_equal(head, 1.0)
    seq.set_gain(0.5)
    out = np.zeros(300, np.float32)
    seq.fill(out)
    i = np.arange(1, 101)
    np.testing.assert_allclose(out[:100], 1.0 - 0.5 * i / 100, atol=1e-6)
    np.testing.assert_allclose(out[100:], 0.5, atol=1e-7)
    seq.set_gain_db(-6.0)
    seq.fill(out)
    assert out[-1] == pytest.approx(db_to_gain(-6.0), abs=1e-6)


def test_mute_ramps_to_silence_and_back_without_jumps() -> None:
    seq = LoopSequencer(crossfade=0, gain_ramp=240)
    seq.submit(np.ones(10_000, np.float32))
    seq.set_gain(0.8)
    seq.fill(np.zeros(1000, np.float32))
    out = np.zeros(8000, np.float32)
    # Mute, unmute in the middle of the ramp down, mute, unmute; blocks of 100 frames.
    changes = {0: True, 100: False, 2000: True, 4000: False}
    for start in range(0, len(out), 100):
        if start in changes:
            seq.set_mute(changes[start])
        seq.fill(out[start : start + 100])
    steps = np.abs(np.diff(out))
    assert steps.max() <= 0.8 / 240 + 1e-6  # never faster than the ramp: no clicks
    assert np.all(out[2000 + 240 : 4000] == 0.0)  # muted: exactly silent
    np.testing.assert_allclose(out[4000 + 240 :], 0.8, atol=1e-6)
    assert seq.muted is False and seq.gain == pytest.approx(0.8)


def test_fill_allocates_no_array_memory() -> None:
    block = 4096  # 16 KiB per float32 block: any temporary array would stand out
    clips = noise_clips(2, 10_000)
    seq = LoopSequencer(crossfade=2000, gain_ramp=5000)
    out = np.zeros((block, 2), np.float32)
    seq.submit(clips[0])
    seq.fill(out)  # warm-up
    seq.submit(clips[1])  # enters at the boundary inside the measured window
    seq.set_gain(0.3)  # ramps inside the measured window
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before, _ = tracemalloc.get_traced_memory()
        for _ in range(200):
            seq.fill(out)
        after, peak = tracemalloc.get_traced_memory()
        # The method sees numpy's buffers: a control allocation of one block shows up.
        tracemalloc.reset_peak()
        control = np.multiply(out, 2.0)
        _, control_peak = tracemalloc.get_traced_memory()
        del control
    finally:
        tracemalloc.stop()
    assert seq.clips_entered == 2 and seq.loops_played > 50
    assert control_peak - before >= out.nbytes
    assert peak - before < 2048, f"fill allocated {peak - before} bytes at its peak"
    assert after - before < 1024


def test_frames_for_ms_and_bad_values() -> None:
    assert frames_for_ms(45.0, 48000) == 2160
    assert frames_for_ms(0.0, 44100) == 0
    with pytest.raises(ValueError):
        frames_for_ms(-1.0, 48000)
    seq = LoopSequencer()
    with pytest.raises(ValueError):
        seq.submit(np.zeros(10, np.float64))
    with pytest.raises(ValueError):
        seq.submit(np.array([0.0, np.nan], np.float32))
    with pytest.raises(ValueError):
        seq.set_gain(-1.0)
    with pytest.raises(TypeError):
        seq.fill(np.zeros(10, np.float64))
    assert db_to_gain(-np.inf) == 0.0


def test_prepare_clip_resamples_to_the_output_rate_and_copies() -> None:
    t = np.arange(22050) / 22050
    clip = np.sin(2 * np.pi * 440 * t)
    prepared = prepare_clip(clip, 22050, 48000)
    assert prepared.dtype == np.float32 and prepared.shape == (48000,)
    assert not prepared.flags.writeable
    expected = np.sin(2 * np.pi * 440 * np.arange(48000) / 48000)
    np.testing.assert_allclose(prepared[1000:-1000], expected[1000:-1000], atol=1e-3)
    same = prepare_clip(clip.astype(np.float32), 48000, 48000)
    assert same is not clip and np.shares_memory(same, clip) is False
    for bad in (np.zeros((10, 2)), np.zeros(0), np.array([np.inf])):
        with pytest.raises(ValueError):
            prepare_clip(bad, 48000, 48000)
