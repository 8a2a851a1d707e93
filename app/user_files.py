"""The TOML files a user owns (presets, MIDI mappings, the last session): where they live,
and reading and writing them with one sentence per failure and never half a file. No Qt."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import platformdirs
import tomli_w

from engine.atomic import atomic_path

__all__ = ["CONFIG_DIR_VARIABLE", "UserFile", "config_dir"]

#: Environment variable that overrides the user's config folder (tests, portable setups).
CONFIG_DIR_VARIABLE = "IMMERSIONS_CONFIG_DIR"


def config_dir() -> Path:
    """The folder for presets, mappings and the last session: ``$IMMERSIONS_CONFIG_DIR`` if
    set, else the platform's user config folder. Not created here; writers create it."""
    override = os.environ.get(CONFIG_DIR_VARIABLE)
    if override:
        return Path(override).expanduser()
    return Path(platformdirs.user_config_dir("immersions"))


class UserFile:
    """One kind of user file: the ``noun`` its sentences use ("preset"), the ``format``
    key it starts with, the newest ``version`` this code reads and writes, and the
    exception (one sentence naming the file) its failures raise."""

    def __init__(self, noun: str, format: str, version: int, error: type[Exception]) -> None:
        self.noun, self.format, self.version, self.error_type = noun, format, version, error

    def error(self, path: Path, problem: str) -> Exception:
        return self.error_type(f"the {self.noun} {path} {problem}.")

    def structure(self, path: Path, problem: str) -> Exception:
        return self.error(path, f"is not an Immersions {self.noun}: {problem}")

    def read(self, path: Path) -> dict[str, Any]:
        """The file's TOML document, its format and version checked."""
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise self.error(path, "does not exist") from None
        except OSError as error:
            raise self.error(path, f"could not be read ({_reason(error)})") from None
        try:
            document = tomllib.loads(data.decode("utf-8"))
        except UnicodeDecodeError:
            raise self.error(path, "is not valid TOML (it is not UTF-8 text)") from None
        except tomllib.TOMLDecodeError as error:
            raise self.error(path, f"is not valid TOML ({error})") from None
        self._check_header(path, document)
        return document

    def write(self, path: Path, document: Mapping[str, Any]) -> Path:
        """Write ``document`` atomically (parent folders created): a reader, or a crash,
        sees the old file or the new one, never half of one."""
        # Serialise before touching the disk, so a bad document never leaves anything behind.
        text = tomli_w.dumps(dict(document))
        try:
            with atomic_path(path) as tmp:
                tmp.write_text(text, encoding="utf-8")
        except OSError as error:
            raise self.error(path, f"could not be written ({_reason(error)})") from None
        return path

    def _check_header(self, path: Path, document: Mapping[str, Any]) -> None:
        form = document.get("format")
        if form != self.format:
            found = "has no format key" if form is None else f"has format = {form!r}"
            raise self.structure(path, f'it {found}, not format = "{self.format}"')
        version = document.get("version")
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise self.structure(
                path, f"its version {version!r} is not a format version (1 or more)"
            )
        if version > self.version:
            raise self.error(
                path,
                f"has format version {version}, newer than this Immersions reads "
                f"({self.version}); update Immersions to load it",
            )


def _reason(error: OSError) -> str:
    return error.strerror or str(error)
