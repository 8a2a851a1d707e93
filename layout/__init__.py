"""The neural map: network graph and force-directed layouts. Never imports Qt or vispy."""
