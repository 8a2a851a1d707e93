"""The clip browser: the bundled origin clips and the user's own files, to start a loop from.

A bundled clip is chosen through the registry's ``clip`` parameter (so MIDI and presets
see the same thing); a user's file is handed over by path. Files come from a file dialog
or are dropped on the list; one that cannot be read is refused with one sentence
(``refused``) and the list and the current clip stay as they were.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from PyQt6.QtCore import Qt, pyqtSignal
from PyQt6.QtGui import QDragEnterEvent, QDropEvent
from PyQt6.QtWidgets import (
    QFileDialog,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from engine.audio_io import AUDIO_EXTENSIONS, AudioFileError, audio_info

__all__ = ["ClipBrowser"]

_KIND = Qt.ItemDataRole.UserRole


class ClipBrowser(QWidget):
    """A list of clips; emits ``bundled_chosen(index)`` or ``file_chosen(path)``."""

    bundled_chosen = pyqtSignal(int)
    file_chosen = pyqtSignal(Path)
    refused = pyqtSignal(str)

    def __init__(self, bundled: Sequence[Path], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setAcceptDrops(True)
        self.list = QListWidget()
        self.list.setObjectName("clips")
        for index, path in enumerate(bundled):
            item = QListWidgetItem(_title(path))
            item.setData(_KIND, index)
            item.setToolTip(str(path))
            self.list.addItem(item)
        self.list.itemActivated.connect(self._activated)
        self.list.itemClicked.connect(self._activated)
        self.add_button = QPushButton("Add audio file…")
        self.add_button.clicked.connect(self._ask_for_files)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.list)
        layout.addWidget(self.add_button)

    def add_files(self, paths: Iterable[str | Path], choose: bool = True) -> list[Path]:
        """Add the readable audio files among ``paths`` (the others are refused with one
        sentence each); choose the last one added. Returns the files added."""
        added: list[Path] = []
        for raw in paths:
            path = Path(raw)
            try:
                audio_info(path)
            except AudioFileError as error:
                self.refused.emit(f"{error} The current clip keeps playing.")
                continue
            item = self._item_for(path)
            if item is None:
                item = QListWidgetItem(_title(path))
                item.setData(_KIND, str(path))
                item.setToolTip(str(path))
                self.list.addItem(item)
            added.append(path)
        if added and choose:
            self.show_current(added[-1])
            self.file_chosen.emit(added[-1])
        return added

    def show_current(self, clip: int | Path | None) -> None:
        """Mark the playing clip (a bundled index or a file) without emitting anything."""
        self.list.blockSignals(True)
        try:
            for row in range(self.list.count()):
                item = self.list.item(row)
                data = item.data(_KIND)  # type: ignore[union-attr]
                if (isinstance(clip, int) and data == clip) or (
                    isinstance(clip, Path) and data == str(clip)
                ):
                    self.list.setCurrentRow(row)
                    return
        finally:
            self.list.blockSignals(False)

    def _item_for(self, path: Path) -> QListWidgetItem | None:
        for row in range(self.list.count()):
            item = self.list.item(row)
            if item is not None and item.data(_KIND) == str(path):
                return item
        return None

    def _activated(self, item: QListWidgetItem) -> None:
        data = item.data(_KIND)
        if isinstance(data, int):
            self.bundled_chosen.emit(data)
        else:
            self.file_chosen.emit(Path(data))

    def _ask_for_files(self) -> None:
        patterns = " ".join(f"*{suffix}" for suffix in sorted(AUDIO_EXTENSIONS))
        names, _ = QFileDialog.getOpenFileNames(
            self, "Add audio files", "", f"Audio ({patterns});;All files (*)"
        )
        self.add_files(names)

    def dragEnterEvent(self, event: QDragEnterEvent | None) -> None:
        if event is not None and event.mimeData().hasUrls():  # type: ignore[union-attr]
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent | None) -> None:
        if event is None:
            return
        urls = event.mimeData().urls()  # type: ignore[union-attr]
        self.add_files(url.toLocalFile() for url in urls if url.isLocalFile())
        event.acceptProposedAction()


def _title(path: Path) -> str:
    return path.stem.replace("_", " ")
