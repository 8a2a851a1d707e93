"""The window's MIDI menu and the controls' right-click menu: ports, learn, forget and
mapping files, all handed to the :class:`~midi.controller.MidiController`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PyQt6.QtCore import QPoint
from PyQt6.QtGui import QAction
from PyQt6.QtWidgets import QFileDialog, QMenu, QMenuBar, QWidget

from engine.params import GROUPS
from midi.controller import MidiController
from midi.launch import remember_ports
from midi.mapping import (
    ACTIONS,
    MappingError,
    MidiMapping,
    default_mapping,
    describe_target,
    load_mapping,
    save_mapping,
)
from midi.ports import MidiUnavailable, PortChoice, list_ports

__all__ = ["MidiMenu"]

_VIRTUAL_LABEL = "Immersions' own port (connect from a patchbay)"


class MidiMenu:
    """Builds the "MIDI" menu in ``bar``; ``report`` shows a sentence in the status line."""

    def __init__(
        self,
        parent: QWidget,
        bar: QMenuBar,
        controller: MidiController,
        report: Callable[[str], None],
    ) -> None:
        self.parent = parent
        self.controller = controller
        self.report = report
        menu = bar.addMenu("&MIDI")
        assert menu is not None
        self.menu = menu
        self.inputs = self._submenu("Input port", lambda m: self._fill_ports(m, is_input=True))
        self.outputs = self._submenu("Output port", lambda m: self._fill_ports(m, is_input=False))
        menu.addSeparator()
        self.learn_menu = self._submenu("Learn", self._fill_learn)
        self.forget_menu = self._submenu("Forget", self._fill_forget)
        self._item(menu, "Cancel learning", controller.cancel_learn)
        menu.addSeparator()
        self._item(menu, "Load mapping…", self._ask_load)
        self._item(menu, "Save mapping as…", self._ask_save)
        self._item(menu, "Use the default mapping", lambda: self.adopt(default_mapping()))

    # --- what the menu does -------------------------------------------------------------

    def choose(self, choice: PortChoice) -> None:
        """Connect to other ports now and remember them."""
        self.controller.choose_ports(choice)
        for note in remember_ports(choice):
            self.report(note)

    def adopt(self, mapping: MidiMapping) -> None:
        """Drive with ``mapping`` and keep it as the user's mapping."""
        controller = self.controller
        controller.use_mapping(mapping, controller.save_to)
        if controller.save_to is not None:
            self.save(controller.save_to, mapping)

    def load(self, path: str | Path) -> bool:
        try:
            mapping, notes = load_mapping(path, self.controller.registry)
        except MappingError as error:
            self.report(f"{error} The current mapping stays.")
            return False
        for note in notes:
            self.report(note)
        self.adopt(mapping)
        return True

    def save(self, path: str | Path, mapping: MidiMapping | None = None) -> bool:
        try:
            save_mapping(path, self.controller.mapping if mapping is None else mapping)
        except MappingError as error:
            self.report(str(error))
            return False
        return True

    def context_menu(self, target: str, where: QPoint) -> QMenu:
        """The right-click menu of the control for ``target``, shown at ``where``."""
        menu = QMenu(self.parent)
        label = describe_target(target, self.controller.registry)
        self._item(menu, f"Learn MIDI control for {label}", lambda: self.controller.learn(target))
        for binding in self.controller.bindings_for(target):
            self._item(
                menu,
                f"Forget {binding.source.label()}",
                lambda: self.controller.forget(target),
            )
            spec = self.controller.registry.get(target)
            if binding.source.kind == "cc" and spec is not None and spec.kind != "bool":
                relative = self._item(
                    menu,
                    f"{binding.source.label()} is an endless encoder (sends steps)",
                    lambda on=not binding.relative: self.controller.set_relative(target, on),
                )
                relative.setCheckable(True)
                relative.setChecked(binding.relative)
        menu.popup(where)
        return menu

    # --- building ------------------------------------------------------------------------

    def _submenu(self, title: str, fill: Callable[[QMenu], None]) -> QMenu:
        submenu = self.menu.addMenu(title)
        assert submenu is not None
        submenu.aboutToShow.connect(lambda: fill(submenu))
        return submenu

    def _item(self, menu: QMenu, text: str, slot: Callable[[], object]) -> QAction:
        action = QAction(text, menu)
        action.triggered.connect(lambda _checked=False: slot())
        menu.addAction(action)
        return action

    def _fill_ports(self, menu: QMenu, is_input: bool) -> None:
        menu.clear()
        link = self.controller.link
        choice = link.choice if link is not None else PortChoice()
        current = choice.input if is_input else choice.output
        try:
            inputs, outputs = list_ports()
        except MidiUnavailable as error:
            action = self._item(menu, str(error), lambda: None)
            action.setEnabled(False)
            return
        for name in [None, *(inputs if is_input else outputs)]:

            def pick(name: str | None = name) -> None:
                if is_input:
                    self.choose(PortChoice(name, choice.output))
                else:
                    self.choose(PortChoice(choice.input, name))

            action = self._item(menu, _VIRTUAL_LABEL if name is None else name, pick)
            action.setCheckable(True)
            action.setChecked(name == current)

    def _fill_learn(self, menu: QMenu) -> None:
        menu.clear()
        registry = self.controller.registry
        for group in GROUPS:
            section = menu.addMenu(group.capitalize())
            assert section is not None
            for spec in registry.group(group):
                self._learn_item(section, spec.name)
        section = menu.addMenu("Buttons")
        assert section is not None
        for action in ACTIONS:
            self._learn_item(section, action)

    def _learn_item(self, menu: QMenu, target: str) -> None:
        label = describe_target(target, self.controller.registry)
        bound = ", ".join(b.source.label() for b in self.controller.bindings_for(target))
        text = f"{label}\t{bound}" if bound else label
        self._item(menu, text, lambda: self.controller.learn(target))

    def _fill_forget(self, menu: QMenu) -> None:
        menu.clear()
        registry = self.controller.registry
        bindings = self.controller.mapping.bindings
        for binding in bindings:
            text = f"{describe_target(binding.target, registry)}\t{binding.source.label()}"
            self._item(menu, text, lambda t=binding.target: self.controller.forget(t))
        if not bindings:
            self._item(menu, "(nothing is bound)", lambda: None).setEnabled(False)

    def _ask_load(self) -> None:
        name, _ = QFileDialog.getOpenFileName(
            self.parent, "Load MIDI mapping", "", "MIDI mappings (*.toml)"
        )
        if name:
            self.load(name)

    def _ask_save(self) -> None:
        name, _ = QFileDialog.getSaveFileName(
            self.parent, "Save MIDI mapping", "midi-mapping.toml", "MIDI mappings (*.toml)"
        )
        if name:
            self.save(name)
