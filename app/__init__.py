"""The desktop app: the only package that imports Qt (PyQt6) or vispy."""
