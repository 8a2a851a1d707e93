"""The artificial ear and what drives it: CQT front end, CPC model, training, checkpoints.

Never imports Qt, vispy, ``app`` or ``layout``; usable from a script or a notebook.
"""
