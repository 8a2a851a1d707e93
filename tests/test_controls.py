"""The control panel generated from the parameter registry (Qt widgets)."""

from __future__ import annotations

import pytest
from PyQt6.QtCore import Qt
from PyQt6.QtWidgets import QCheckBox, QComboBox, QSlider, QSpinBox

from app.controls import SLIDER_STEPS, ControlPanel
from engine.params import REGISTRY, ParameterValues

pytestmark = pytest.mark.qt


@pytest.fixture
def panel(qtbot: object) -> ControlPanel:
    widget = ControlPanel(ParameterValues.defaults(REGISTRY.with_clips(12)))
    qtbot.addWidget(widget)  # type: ignore[attr-defined]
    return widget


def test_every_registry_parameter_has_a_widget_showing_its_default(panel: ControlPanel) -> None:
    assert list(panel.controls) == list(panel.registry)
    for name, control in panel.controls.items():
        assert control.value == panel.registry[name].default
        assert control.text.text() == panel.registry[name].describe(control.value)


def test_widget_kinds_follow_the_specs(panel: ControlPanel) -> None:
    kinds = {name: type(control.input) for name, control in panel.controls.items()}
    assert kinds["learning_rate"] is QSlider and kinds["mix_original"] is QSlider
    assert kinds["keep_selection"] is QCheckBox and kinds["mute"] is QCheckBox
    assert kinds["layer"] is QComboBox and kinds["clip"] is QComboBox
    assert kinds["seed"] is QSpinBox


def test_a_log_slider_maps_its_travel_through_the_spec(panel: ControlPanel) -> None:
    emitted: list[tuple[str, object]] = []
    panel.changed.connect(lambda name, value: emitted.append((name, value)))
    slider = panel.controls["mix_original"].input
    assert isinstance(slider, QSlider)
    slider.setValue(SLIDER_STEPS // 2)
    spec = REGISTRY["mix_original"]
    assert emitted == [("mix_original", spec.from_normalised(0.5))]
    assert emitted[0][1] < 0.1  # log: the middle of the travel is far below the middle value
    slider.setValue(0)
    assert emitted[-1] == ("mix_original", 0.0)


def test_keyboard_moves_a_slider_and_toggles_a_switch(panel: ControlPanel, qtbot: object) -> None:
    emitted: list[tuple[str, object]] = []
    panel.changed.connect(lambda name, value: emitted.append((name, value)))
    slider = panel.controls["time_jitter"].input
    slider.setFocus()
    qtbot.keyClick(slider, Qt.Key.Key_PageUp)  # type: ignore[attr-defined]
    assert emitted and emitted[-1][0] == "time_jitter"
    assert emitted[-1][1] > REGISTRY["time_jitter"].default
    box = panel.controls["mute"].input
    qtbot.keyClick(box, Qt.Key.Key_Space)  # type: ignore[attr-defined]
    assert emitted[-1] == ("mute", True)


def test_showing_values_sets_every_widget_and_emits_nothing(panel: ControlPanel) -> None:
    emitted: list[tuple[str, object]] = []
    panel.changed.connect(lambda name, value: emitted.append((name, value)))
    values, reports = ParameterValues.defaults(panel.registry).replace(
        learning_rate=-2.5,
        mix_original=0.2,
        batch_size=4,
        seed=12345,
        layer="ar3",
        keep_selection=True,
        objective_sign="minimise",
        bars_per_loop=4,
        clip=7,
        eq_low=-6.0,
        mute=True,
    )
    assert not reports
    panel.show_values(values)
    assert emitted == []
    for name, control in panel.controls.items():
        assert control.value == values[name], name
    assert panel.controls["seed"].input.value() == 12345
    assert panel.controls["layer"].input.currentText() == "ar3"
    assert panel.controls["clip"].input.currentText() == "7"
    assert panel.controls["learning_rate"].text.text() == "0.00316"
