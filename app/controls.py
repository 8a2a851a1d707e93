"""The control panel: one widget per registry parameter, generated from the registry.

Nothing here holds a range, a default or a scaling: sliders move in [0, 1] and the
parameter's spec maps that position to a value (``ParamSpec.from_normalised``), so a
log-scaled control is log-scaled here exactly as on a MIDI knob. The panel says what the
user changed through ``changed(name, value)`` and a right-click (for MIDI learn) through
``context_requested``; ``show_values`` puts values from elsewhere
(the engine, a preset, MIDI) on the widgets without echoing them back.
"""

from __future__ import annotations

from PyQt6.QtCore import QPoint, Qt, pyqtSignal
from PyQt6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QSlider,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from engine.params import GROUPS, ParameterValues, ParamSpec, Registry, Value

__all__ = ["ControlPanel", "ParameterControl"]

#: Slider steps over the whole travel: fine enough that a log control's bottom decade moves.
SLIDER_STEPS = 1000
#: Whole-number controls with fewer values than this are a list (bars per loop, clip).
LIST_UP_TO = 32


class ParameterControl(QWidget):
    """One parameter's widget (slider, check box or list) and its value text."""

    edited = pyqtSignal(str, object)

    def __init__(self, spec: ParamSpec, value: Value, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.spec = spec
        self._value = value
        self._quiet = False
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.input = self._make_input()
        self.input.setToolTip(spec.help)
        self.input.setObjectName(spec.name)
        self.input.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.text = QLabel()
        self.text.setMinimumWidth(70)
        layout.addWidget(self.input, stretch=1)
        layout.addWidget(self.text)
        self.show_value(value)

    def _make_input(self) -> QWidget:
        spec = self.spec
        if spec.kind == "bool":
            box = QCheckBox()
            box.toggled.connect(lambda on: self._user(bool(on)))
            return box
        span = (spec.maximum or 0) - (spec.minimum or 0)
        if spec.kind == "int" and span > SLIDER_STEPS:
            spin = QSpinBox()  # a seed: any number, typed
            spin.setRange(int(spec.minimum or 0), int(spec.maximum or 0))
            spin.valueChanged.connect(lambda n: self._user(int(n)))
            return spin
        if spec.kind == "choice" or (
            spec.kind == "int" and spec.scale == "linear" and span < LIST_UP_TO
        ):
            combo = QComboBox()
            for choice in self._choices():
                combo.addItem(str(choice), choice)
            combo.currentIndexChanged.connect(lambda i: self._user(combo.itemData(i)))
            return combo
        slider = QSlider(Qt.Orientation.Horizontal)
        slider.setRange(0, SLIDER_STEPS)
        slider.setPageStep(SLIDER_STEPS // 20)
        slider.valueChanged.connect(
            lambda position: self._user(spec.from_normalised(position / SLIDER_STEPS))
        )
        return slider

    def _choices(self) -> list[Value]:
        spec = self.spec
        if spec.kind == "choice":
            return list(spec.choices)
        assert spec.minimum is not None and spec.maximum is not None
        return list(range(int(spec.minimum), int(spec.maximum) + 1))

    @property
    def value(self) -> Value:
        return self._value

    def show_value(self, value: Value) -> None:
        """Put ``value`` on the widget without emitting ``edited``."""
        self._value = value
        self._quiet = True
        try:
            widget = self.input
            if isinstance(widget, QCheckBox):
                widget.setChecked(bool(value))
            elif isinstance(widget, QComboBox):
                widget.setCurrentIndex(max(0, widget.findData(value)))
            elif isinstance(widget, QSpinBox):
                widget.setValue(int(value))
            else:
                assert isinstance(widget, QSlider)
                widget.setValue(round(self.spec.to_normalised(value) * SLIDER_STEPS))
        finally:
            self._quiet = False
        self.text.setText(self.spec.describe(value))

    def _user(self, value: Value) -> None:
        if self._quiet or value == self._value:
            return
        self._value = value
        self.text.setText(self.spec.describe(value))
        self.edited.emit(self.spec.name, value)


class ControlPanel(QWidget):
    """Every parameter of ``registry``, grouped as the registry groups them."""

    changed = pyqtSignal(str, object)
    #: A right-click on a control: its parameter's name and where (global coordinates).
    context_requested = pyqtSignal(str, QPoint)

    def __init__(self, values: ParameterValues, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.registry: Registry = values.registry
        self.controls: dict[str, ParameterControl] = {}
        outer = QVBoxLayout(self)
        for group in GROUPS:
            specs = self.registry.group(group)
            if not specs:
                continue
            box = QGroupBox(group.capitalize())
            form = QFormLayout(box)
            for spec in specs:
                control = ParameterControl(spec, values[spec.name])
                control.edited.connect(self.changed)
                control.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
                control.customContextMenuRequested.connect(
                    lambda pos, c=control: self.context_requested.emit(
                        c.spec.name, c.mapToGlobal(pos)
                    )
                )
                label = QLabel(spec.label + (f" ({spec.unit})" if spec.unit else ""))
                label.setBuddy(control.input)
                label.setToolTip(spec.help)
                form.addRow(label, control)
                self.controls[spec.name] = control
            outer.addWidget(box)
        outer.addStretch(1)

    def show_values(self, values: ParameterValues) -> None:
        """Show ``values`` on every widget (no ``changed`` signals)."""
        for name, control in self.controls.items():
            if control.value != values[name]:
                control.show_value(values[name])
