"""Stand-in: see `__init__.py`; any name read from it would raise AttributeError."""
