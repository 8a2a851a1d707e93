"""Small QPainter views for the main window's "views" strip.

`ImageStrip` shows a pitch × time array (a CQT, an activation map, a signed gradient) as
a colour image stretched to the widget, or a long 1-D signal (the input gradient) as a
min/max envelope, with a playhead at the loop phase. `LossPlot` draws the optimisation's
loss history with its latest value.

Both are meant to be cheap: all conversion (percentiles, colour tables, envelopes,
polylines) happens in the ``set_*`` methods and on resize, so ``paintEvent`` only blits
an image and a few lines. The window calls `ImageStrip.set_phase` about 60 times a second;
it repaints only the playhead's old and new columns, and only when the column changes.
No vispy or matplotlib here: plain Qt widgets, so they also render on the offscreen platform.
"""

from __future__ import annotations

import numpy as np
from PyQt6.QtCore import QPointF, QRect, QRectF, QSize, Qt
from PyQt6.QtGui import QColor, QFont, QImage, QPainter, QPaintEvent, QPen, QPolygonF, QResizeEvent
from PyQt6.QtWidgets import QSizePolicy, QWidget

__all__ = [
    "DIVERGING",
    "MAGMA",
    "ImageStrip",
    "LossPlot",
    "colour_table",
    "robust_indices",
    "waveform_envelope",
]

#: Anchors of an approximation of matplotlib's "magma" (dark to bright, perceptually even).
MAGMA_ANCHORS = (
    (0, 0, 4),
    (59, 15, 112),
    (140, 41, 129),
    (222, 73, 104),
    (254, 159, 109),
    (252, 253, 191),
)
#: Anchors of the signed table: blue for −m, black for 0, red for +m.
DIVERGING_ANCHORS = (
    (120, 190, 255),
    (30, 90, 230),
    (0, 0, 0),
    (230, 40, 20),
    (255, 170, 120),
)
#: Percentiles that set an unsigned image's range (outliers saturate instead of dimming it).
LOW_PERCENTILE = 2.0
HIGH_PERCENTILE = 98.0
#: Values sampled at most for the percentiles: a strided sample is as good and stays fast.
PERCENTILE_SAMPLE = 200_000

BACKGROUND = QColor(0, 0, 0)
PLAYHEAD = QColor(255, 255, 255, 220)
TITLE = QColor(230, 230, 230)
ENVELOPE = QColor(110, 200, 255)
LOSS_LINE = QColor(255, 170, 60)
LOSS_TEXT = QColor(230, 230, 230)
LOSS_BACKGROUND = QColor(16, 16, 16)


def colour_table(anchors: tuple[tuple[int, int, int], ...]) -> np.ndarray:
    """A 256-entry opaque RGB32 table (``0xFFRRGGBB`` as uint32) through evenly spaced anchors."""
    points = np.asarray(anchors, dtype=np.float64)
    where = np.linspace(0.0, 1.0, len(points))
    t = np.linspace(0.0, 1.0, 256)
    rgb = np.stack([np.interp(t, where, points[:, c]) for c in range(3)], axis=1)
    r, g, b = np.round(rgb).astype(np.uint32).T
    return np.uint32(0xFF000000) | (r << 16) | (g << 8) | b


#: The tables, built once.
MAGMA = colour_table(MAGMA_ANCHORS)
DIVERGING = colour_table(DIVERGING_ANCHORS)


def _sample(finite_values: np.ndarray) -> np.ndarray:
    step = max(1, finite_values.size // PERCENTILE_SAMPLE)
    return finite_values[::step]


def robust_indices(array: np.ndarray, *, symmetric: bool = False) -> np.ndarray:
    """Map an array to colour-table indices (uint8, same shape) over a robust range.

    Unsigned data maps its 2nd..98th percentile to 0..255. Signed data (``symmetric``)
    maps −m..m to 0..255 with m the 98th percentile of |x|, so 0 lands in the middle.
    NaN and ±Inf take the index of 0 (index 0, or the middle when ``symmetric``); constant
    data takes index 0 (or the middle).
    """
    values = np.asarray(array, dtype=np.float32)
    finite = np.isfinite(values)
    kept = _sample(values[finite])
    if symmetric:
        m = float(np.percentile(np.abs(kept), HIGH_PERCENTILE)) if kept.size else 0.0
        if not m > 0.0:
            return np.full(values.shape, 128, dtype=np.uint8)
        scaled = (np.where(finite, values, 0.0) / m + 1.0) * 127.5
    else:
        if kept.size == 0:
            return np.zeros(values.shape, dtype=np.uint8)
        lo, hi = (float(p) for p in np.percentile(kept, [LOW_PERCENTILE, HIGH_PERCENTILE]))
        if not hi > lo:
            lo, hi = float(kept.min()), float(kept.max())
        if not hi > lo:
            return np.zeros(values.shape, dtype=np.uint8)
        scaled = (np.where(finite, values, lo) - lo) * (255.0 / (hi - lo))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def waveform_envelope(samples: np.ndarray, columns: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-column (min, max) of a 1-D signal split into ``min(columns, len)`` even spans.

    Non-finite samples count as 0. Returns two float32 arrays of the same length.
    """
    values = np.asarray(samples, dtype=np.float32).ravel()
    values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
    n = min(int(columns), values.size)
    if n <= 0:
        empty = np.zeros(0, dtype=np.float32)
        return empty, empty
    starts = (np.arange(n, dtype=np.int64) * values.size) // n
    return np.minimum.reduceat(values, starts), np.maximum.reduceat(values, starts)


def _rgb32_image(pixels: np.ndarray) -> QImage:
    """A QImage viewing a C-contiguous (h, w) uint32 buffer; the caller keeps the buffer."""
    height, width = pixels.shape
    return QImage(pixels.data, width, height, 4 * width, QImage.Format.Format_RGB32)


def _small_font(font: QFont) -> QFont:
    small = QFont(font)
    if small.pointSizeF() > 0:
        small.setPointSizeF(max(6.0, small.pointSizeF() * 0.8))
    else:
        small.setPixelSize(max(8, int(small.pixelSize() * 0.8)))
    return small


class ImageStrip(QWidget):
    """A pitch × time array as a colour image (low pitch at the bottom), or a 1-D signal as
    a min/max envelope, stretched to the widget, with a title and a playhead at the loop phase.
    """

    def __init__(self, title: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._title = title
        self._phase = 0.0
        self._buffer: np.ndarray | None = None  # the pixels `_image` views; must outlive it
        self._image: QImage | None = None
        self._samples: np.ndarray | None = None  # set while showing a waveform
        self._title_font = _small_font(self.font())
        self.setMinimumHeight(32)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent)

    @property
    def title(self) -> str:
        """The text drawn in the top-left corner."""
        return self._title

    @property
    def phase(self) -> float:
        """The playhead position in [0, 1)."""
        return self._phase

    @property
    def playhead_column(self) -> int:
        """The widget pixel column the playhead is drawn in."""
        return self._column(self._phase)

    @property
    def image(self) -> QImage | None:
        """The picture drawn (stretched to the widget), or None when cleared."""
        return self._image

    def sizeHint(self) -> QSize:
        """A strip: wide and low."""
        return QSize(320, 96)

    def minimumSizeHint(self) -> QSize:
        """Small enough to stack several strips."""
        return QSize(64, 32)

    def set_image(self, array: np.ndarray | None, *, symmetric: bool = False) -> None:
        """Show a 2-D array (rows = pitch bins from low to high, columns = time).

        ``symmetric`` is for signed data (a gradient): −m..m maps blue–black–red with
        m the 98th percentile of |x|; otherwise the 2nd..98th percentile maps dark to
        bright. NaN/Inf show as 0. A 1-D array goes to `set_waveform`; None or an empty
        array clears the picture.
        """
        if array is None or np.size(array) == 0:
            self.clear()
            return
        values = np.asarray(array)
        if values.ndim == 1:
            self.set_waveform(values)
            return
        if values.ndim != 2:
            raise ValueError(f"ImageStrip shows 1-D or 2-D arrays, not shape {values.shape}")
        indices = robust_indices(values, symmetric=symmetric)
        table = DIVERGING if symmetric else MAGMA
        self._samples = None
        # Fancy indexing makes a fresh C-contiguous buffer; row 0 (low pitch) goes last.
        self._show_buffer(table[indices[::-1]])

    def set_waveform(self, samples: np.ndarray | None) -> None:
        """Show a 1-D signal as a centred min/max envelope per pixel column, scaled by its max |x|.

        None or an empty array clears the picture.
        """
        if samples is None or np.size(samples) == 0:
            self.clear()
            return
        values = np.asarray(samples, dtype=np.float32).ravel()
        self._samples = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
        self._render_waveform()

    def set_phase(self, phase: float) -> None:
        """Move the playhead to ``phase``, wrapped into [0, 1).

        Repaints only the old and new columns, and only when the column changes.
        """
        phase = float(phase) % 1.0 if np.isfinite(phase) else 0.0
        if phase >= 1.0:  # a tiny negative phase rounds up to 1.0 under %
            phase = 0.0
        old, new = self._column(self._phase), self._column(phase)
        self._phase = phase
        if new != old:
            height = self.height()
            self.update(QRect(old - 1, 0, 3, height))
            self.update(QRect(new - 1, 0, 3, height))

    def clear(self) -> None:
        """Remove the picture (the title and playhead stay)."""
        self._samples = None
        self._image = None
        self._buffer = None
        self.update()

    def _show_buffer(self, pixels: np.ndarray) -> None:
        pixels = np.ascontiguousarray(pixels, dtype=np.uint32)
        self._image = _rgb32_image(pixels)
        self._buffer = pixels
        self.update()

    def _render_waveform(self) -> None:
        if self._samples is None:
            return
        height = max(1, self.height())
        low, high = waveform_envelope(self._samples, max(1, self.width()))
        peak = float(max(np.abs(low).max(), np.abs(high).max()))
        scale = 0.0 if peak == 0.0 else 0.95 * (height - 1) / 2.0 / peak
        centre = (height - 1) / 2.0
        top = np.floor(centre - high * scale).astype(np.int32)
        bottom = np.ceil(centre - low * scale).astype(np.int32)
        rows = np.arange(height, dtype=np.int32)[:, None]
        inside = (rows >= top[None, :]) & (rows <= bottom[None, :])
        on, off = np.uint32(ENVELOPE.rgba()), np.uint32(BACKGROUND.rgba())
        self._show_buffer(np.where(inside, on, off))

    def _column(self, phase: float) -> int:
        width = max(1, self.width())
        return min(width - 1, int(phase * width))

    def resizeEvent(self, event: QResizeEvent | None) -> None:
        """Re-render a waveform for the new pixel columns (an image just stretches)."""
        super().resizeEvent(event)
        self._render_waveform()

    def paintEvent(self, event: QPaintEvent | None) -> None:
        """Blit the picture, then the playhead and the title."""
        painter = QPainter(self)
        rect = self.rect()
        if self._image is None:
            painter.fillRect(rect, BACKGROUND)
        else:
            painter.drawImage(QRectF(rect), self._image)
        x = self._column(self._phase)
        painter.setPen(QPen(PLAYHEAD, 1))
        painter.drawLine(x, 0, x, rect.height() - 1)
        if self._title:
            painter.setFont(self._title_font)
            box = rect.adjusted(4, 2, -4, -2)
            flags = Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop
            painter.setPen(BACKGROUND)  # a shadow keeps it legible on bright pixels
            painter.drawText(box.translated(1, 1), flags, self._title)
            painter.setPen(TITLE)
            painter.drawText(box, flags, self._title)
        painter.end()


class LossPlot(QWidget):
    """The loss history (newest last) as a polyline scaled to its range, with the latest value."""

    #: Pixels kept free around the curve, plus this fraction of the value range.
    MARGIN_PX = 4
    MARGIN_FRACTION = 0.05

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._values = np.zeros(0, dtype=np.float64)
        self._lines: list[QPolygonF] = []
        self._points: list[QPointF] = []  # isolated finite values between non-finite ones
        self._latest_text = ""
        self._text_font = _small_font(self.font())
        self.setMinimumHeight(32)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent)

    @property
    def latest_text(self) -> str:
        """The text drawn for the newest value, e.g. "loss −1.234" ("" when empty)."""
        return self._latest_text

    @property
    def history(self) -> np.ndarray:
        """The values drawn (a copy)."""
        return self._values.copy()

    def sizeHint(self) -> QSize:
        """A strip: wide and low."""
        return QSize(320, 96)

    def minimumSizeHint(self) -> QSize:
        """Small enough to stack with the image strips."""
        return QSize(64, 32)

    def set_history(self, values: np.ndarray | None) -> None:
        """Show a 1-D loss history, newest last; NaN/Inf points are left out of the line."""
        if values is None:
            values = np.zeros(0)
        self._values = np.asarray(values, dtype=np.float64).ravel().copy()
        if self._values.size:
            self._latest_text = f"loss {self._values[-1]:.4g}".replace("-", "−")
        else:
            self._latest_text = ""
        self._build()
        self.update()

    def _build(self) -> None:
        self._lines, self._points = [], []
        values = self._values
        finite = np.flatnonzero(np.isfinite(values))
        if finite.size == 0:
            return
        lo, hi = float(values[finite].min()), float(values[finite].max())
        span = hi - lo
        pad = self.MARGIN_PX
        width, height = max(1, self.width() - 2 * pad), max(1, self.height() - 2 * pad)
        xs = pad + width * (np.arange(values.size) / max(1, values.size - 1))
        if span > 0.0:
            inner = 1.0 - 2.0 * self.MARGIN_FRACTION
            heights = self.MARGIN_FRACTION + inner * (values - lo) / span
        else:
            heights = np.full(values.size, 0.5)
        ys = pad + height * (1.0 - heights)  # larger loss is higher up
        for run in np.split(finite, np.flatnonzero(np.diff(finite) > 1) + 1):
            points = [QPointF(float(xs[i]), float(ys[i])) for i in run]
            if len(points) == 1:
                self._points.append(points[0])
            else:
                self._lines.append(QPolygonF(points))

    def resizeEvent(self, event: QResizeEvent | None) -> None:
        """Re-place the polyline for the new size."""
        super().resizeEvent(event)
        self._build()

    def paintEvent(self, event: QPaintEvent | None) -> None:
        """Draw the background, the polyline and the latest value."""
        painter = QPainter(self)
        rect = self.rect()
        painter.fillRect(rect, LOSS_BACKGROUND)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setPen(QPen(LOSS_LINE, 1.5))
        for line in self._lines:
            painter.drawPolyline(line)
        if self._points:
            painter.setPen(QPen(LOSS_LINE, 3.0))
            painter.drawPoints(QPolygonF(self._points))
        if self._latest_text:
            painter.setFont(self._text_font)
            painter.setPen(LOSS_TEXT)
            flags = Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignTop
            painter.drawText(rect.adjusted(4, 2, -4, -2), flags, self._latest_text)
        painter.end()
