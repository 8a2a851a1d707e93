"""vispy visuals that mirror the app's Qt-free models."""
