"""The views strip's QPainter widgets, checked on the pixels they render."""

from __future__ import annotations

import numpy as np
import pytest
from PyQt6.QtCore import QRect
from PyQt6.QtGui import QImage
from PyQt6.QtWidgets import QWidget

from app.plots import ImageStrip, LossPlot

pytestmark = pytest.mark.qt

WIDTH, HEIGHT = 320, 96


def render(widget: QWidget) -> np.ndarray:
    """The widget's pixels as an (h, w, 3) uint8 RGB array, at one pixel per widget pixel."""
    image = widget.grab().toImage().convertToFormat(QImage.Format.Format_RGB32)
    image = image.scaled(widget.width(), widget.height())  # a device pixel ratio ≠ 1
    bits = image.constBits()
    assert bits is not None
    bits.setsize(image.sizeInBytes())
    rows = np.frombuffer(bits, dtype=np.uint8).reshape(image.height(), image.bytesPerLine())
    bgra = rows[:, : 4 * image.width()].reshape(image.height(), image.width(), 4)
    return bgra[:, :, 2::-1].astype(np.int32)  # 0xFFRRGGBB is B, G, R, A in memory


def strip(qtbot: object, title: str = "") -> ImageStrip:
    widget = ImageStrip(title)
    qtbot.addWidget(widget)  # type: ignore[attr-defined]
    widget.resize(WIDTH, HEIGHT)
    return widget


def loss_plot(qtbot: object) -> LossPlot:
    widget = LossPlot()
    qtbot.addWidget(widget)  # type: ignore[attr-defined]
    widget.resize(WIDTH, HEIGHT)
    return widget


def brightness(pixels: np.ndarray) -> np.ndarray:
    return pixels.sum(axis=-1)


def is_line(pixels: np.ndarray) -> np.ndarray:
    """Pixels of the loss line's orange (antialiased edges included), not the grey text."""
    r, b = pixels[..., 0], pixels[..., 2]
    return (r > 80) & (r - b > 50)


def test_high_pitch_rows_draw_at_the_top(qtbot: object) -> None:
    widget = strip(qtbot)
    spectrogram = np.zeros((84, 200), dtype=np.float32)
    spectrogram[42:] = 1.0  # the upper half of the pitch bins is loud
    widget.set_image(spectrogram)
    widget.set_phase(0.0)
    pixels = render(widget)
    top, bottom = pixels[4:44, 20:300], pixels[52:92, 20:300]
    assert brightness(top).min() > 500  # the bright end of the dark-to-bright table
    assert brightness(bottom).max() < 30


def test_the_colour_table_runs_dark_to_bright_over_the_robust_range(qtbot: object) -> None:
    widget = strip(qtbot)
    ramp = np.tile(np.linspace(0.0, 1.0, 64, dtype=np.float32), (8, 1))
    ramp[0, 0] = -1e9  # one outlier must not crush the rest into black
    widget.set_image(ramp)
    row = brightness(render(widget)[HEIGHT // 2, 8:312])
    assert np.all(np.diff(row) >= 0)
    assert row[-1] - row[0] > 500


def test_playhead_is_drawn_in_the_column_of_the_phase(qtbot: object) -> None:
    widget = strip(qtbot)
    widget.set_image(np.zeros((12, 40)))
    widget.set_phase(0.25)
    assert widget.playhead_column == WIDTH // 4
    pixels = render(widget)
    lit = np.flatnonzero(brightness(pixels[HEIGHT // 2]) > 600)
    assert lit.tolist() == [WIDTH // 4]
    widget.set_phase(1.5)  # wraps to 0.5
    assert widget.phase == 0.5
    widget.set_phase(-1e-17)
    assert widget.phase == 0.0
    widget.set_phase(1.5)
    lit = np.flatnonzero(brightness(render(widget)[HEIGHT // 2]) > 600)
    assert lit.tolist() == [WIDTH // 2]


def test_set_phase_repaints_only_when_the_playhead_column_changes(qtbot: object) -> None:
    widget = strip(qtbot)
    updates: list[QRect] = []
    widget.update = updates.append  # type: ignore[method-assign,assignment]
    widget.set_phase(0.5)
    assert {rect.center().x() for rect in updates} == {0, WIDTH // 2}
    updates.clear()
    widget.set_phase(0.5 + 0.2 / WIDTH)  # within the same pixel column
    assert updates == []


def test_signed_data_draws_red_for_positive_and_blue_for_negative(qtbot: object) -> None:
    widget = strip(qtbot)
    rng = np.random.default_rng(1)
    gradient = rng.normal(0.0, 0.05, size=(84, 100))
    gradient[:, :50] += 1.0
    gradient[:, 50:] -= 1.0
    widget.set_image(gradient, symmetric=True)
    widget.set_phase(0.99)
    pixels = render(widget)
    left, right = pixels[20:90, 20:150], pixels[20:90, 170:300]
    assert np.all(left[..., 0] > left[..., 2] + 100)
    assert np.all(right[..., 2] > right[..., 0] + 100)


def test_signed_zero_draws_black(qtbot: object) -> None:
    widget = strip(qtbot)
    gradient = np.zeros((10, 30))
    gradient[:, :10] = 1.0
    gradient[:, 10:20] = -1.0
    widget.set_image(gradient, symmetric=True)
    widget.set_phase(0.0)
    assert brightness(render(widget)[10:90, 230:310]).max() < 30


@pytest.mark.parametrize("symmetric", [False, True])
def test_nan_and_inf_values_draw_black_without_crashing(qtbot: object, symmetric: bool) -> None:
    widget = strip(qtbot)
    values = np.tile(np.linspace(-1.0, 1.0, 80), (20, 1))
    values[:, 40:60] = np.nan
    values[:, 60:62] = np.inf
    values[:, 62:64] = -np.inf
    widget.set_image(values, symmetric=symmetric)
    widget.set_phase(0.0)
    pixels = render(widget)
    nan_columns = pixels[10:90, 165:235]  # widget columns 160..240 show array columns 40..60
    assert brightness(nan_columns).max() < 30
    assert brightness(pixels[10:90, 290:315]).min() > 300  # finite data still drawn


def test_all_nan_and_constant_arrays_draw_black(qtbot: object) -> None:
    widget = strip(qtbot)
    for values, symmetric in [
        (np.full((8, 8), np.nan), False),
        (np.full((8, 8), np.nan), True),
        (np.full((8, 8), 3.0), False),
        (np.zeros((8, 8)), True),
    ]:
        widget.set_image(values, symmetric=symmetric)
        widget.set_phase(0.0)
        assert brightness(render(widget)[:, 4:]).max() < 30


def test_none_or_an_empty_array_clears_the_picture(qtbot: object) -> None:
    widget = strip(qtbot)
    widget.set_image(np.ones((4, 4)) * np.arange(4))
    assert widget.image is not None
    widget.set_image(None)
    assert widget.image is None
    widget.set_image(np.arange(16.0).reshape(4, 4))
    widget.set_image(np.zeros((0, 5)))
    assert widget.image is None
    widget.set_phase(0.5)
    pixels = render(widget)
    pixels[:, WIDTH // 2] = 0  # all but the playhead is background
    assert brightness(pixels).max() == 0


def test_a_three_dimensional_array_is_refused(qtbot: object) -> None:
    with pytest.raises(ValueError, match="1-D or 2-D"):
        strip(qtbot).set_image(np.zeros((2, 3, 4)))


def is_envelope(pixels: np.ndarray) -> np.ndarray:
    """Pixels of the waveform envelope's light blue."""
    return (pixels[..., 2] > 150) & (pixels[..., 0] < 200)


def envelope_rows(pixels: np.ndarray) -> np.ndarray:
    """How many rows of each column the waveform envelope fills."""
    return is_envelope(pixels).sum(axis=0)


def test_waveform_envelope_fills_more_rows_where_the_signal_is_larger(qtbot: object) -> None:
    widget = strip(qtbot)
    rng = np.random.default_rng(2)
    samples = rng.uniform(-1.0, 1.0, 88200).astype(np.float32)
    samples[:44100] *= 0.2
    widget.set_waveform(samples)
    widget.set_phase(0.0)
    rows = envelope_rows(render(widget))
    quiet, loud = rows[10:150], rows[170:310]
    assert quiet.min() >= 1 and loud.min() >= 1
    assert loud.min() > 3 * quiet.max()
    assert loud.max() >= 0.9 * HEIGHT  # scaled by the max |x|
    lit = np.flatnonzero(is_envelope(render(widget)[:, 200]))
    assert abs((lit.min() + lit.max()) / 2 - (HEIGHT - 1) / 2) <= 2  # centred


def test_a_one_dimensional_image_is_drawn_as_a_waveform(qtbot: object) -> None:
    widget = strip(qtbot)
    samples = np.sin(np.linspace(0.0, 2 * np.pi * 2000, 88200))  # many cycles per column
    samples[100:200] = np.nan
    widget.set_image(samples)
    widget.set_phase(0.0)
    assert envelope_rows(render(widget))[10:310].min() > 0.8 * HEIGHT


def test_waveform_follows_the_widget_width(qtbot: object) -> None:
    widget = strip(qtbot)
    widget.set_waveform(np.linspace(-1.0, 1.0, 88200))
    assert widget.image is not None and widget.image.width() == WIDTH
    widget.resize(200, HEIGHT)
    widget.grab()  # delivers the pending resize event of a hidden widget
    assert widget.image is not None and widget.image.width() == 200


def test_the_title_is_drawn_in_the_top_left_corner(qtbot: object) -> None:
    plain, titled = strip(qtbot), strip(qtbot, title="CQT")
    assert titled.title == "CQT"
    for widget in (plain, titled):
        widget.set_image(np.zeros((4, 4)))
        widget.set_phase(0.9)
    difference = np.abs(render(titled) - render(plain)).sum(axis=-1)
    changed_rows, changed_columns = np.nonzero(difference)
    assert changed_rows.size > 0
    assert changed_rows.max() < HEIGHT // 2 and changed_columns.max() < WIDTH // 2


def test_views_ask_for_a_wide_low_size(qtbot: object) -> None:
    for widget in (strip(qtbot), loss_plot(qtbot)):
        hint = widget.sizeHint()
        assert hint.width() > 2 * hint.height()
        assert 0 < widget.minimumHeight() <= hint.height()


def test_loss_plot_draws_a_decreasing_history_going_down(qtbot: object) -> None:
    widget = loss_plot(qtbot)
    widget.set_history(np.geomspace(5.0, 0.5, 300))
    line = is_line(render(widget))
    left_rows = np.nonzero(line[:, :20])[0]
    right_rows = np.nonzero(line[:, -20:])[0]
    assert left_rows.size and right_rows.size
    assert left_rows.mean() < HEIGHT / 3 and right_rows.mean() > 2 * HEIGHT / 3


def test_loss_plot_draws_an_increasing_history_going_up(qtbot: object) -> None:
    widget = loss_plot(qtbot)
    widget.set_history(np.linspace(-3.0, -1.0, 50))
    line = is_line(render(widget))
    assert np.nonzero(line[:, :20])[0].mean() > np.nonzero(line[:, -20:])[0].mean() + HEIGHT / 2


def test_loss_plot_writes_the_latest_value(qtbot: object) -> None:
    widget = loss_plot(qtbot)
    assert widget.latest_text == ""
    widget.set_history(np.array([3.0, 2.0, -1.23449]))
    assert widget.latest_text == "loss −1.234"
    with_text = render(widget)
    widget.set_history(np.array([]))
    assert widget.latest_text == ""
    assert np.abs(with_text - render(widget)).sum() > 0


def test_loss_plot_skips_non_finite_points(qtbot: object) -> None:
    widget = loss_plot(qtbot)
    history = np.linspace(1.0, 0.0, 101)
    history[40:61] = np.nan
    history[80] = np.inf
    widget.set_history(history)
    line = is_line(render(widget))
    drawn = line.any(axis=0)
    x = np.linspace(4, WIDTH - 4, 101)  # where each point lands, inside the 4 px margin
    assert drawn[int(x[10])] and drawn[int(x[90])]
    assert not drawn[int(x[45]) : int(x[55])].any()  # the NaN run is a gap
    assert line.sum(axis=0)[int(x[20])] < 10  # the Inf did not stretch the scale
    assert line[:, int(x[20])].nonzero()[0].mean() < HEIGHT / 2


def test_loss_plot_of_a_constant_history_is_a_level_line(qtbot: object) -> None:
    widget = loss_plot(qtbot)
    widget.set_history(np.full(20, 2.5))
    rows = np.nonzero(is_line(render(widget))[:, 10:200])[0]
    assert rows.size and rows.max() - rows.min() <= 3
    assert abs(rows.mean() - HEIGHT / 2) < 4


def test_loss_plot_with_only_non_finite_values_draws_no_line(qtbot: object) -> None:
    widget = loss_plot(qtbot)
    widget.set_history(np.array([np.nan, np.inf, -np.inf]))
    assert widget.latest_text == "loss −inf"
    assert not is_line(render(widget)).any()
