"""The package version, in a module of its own so that any module can read it without importing
``advlearn/__init__`` (which imports most of the package). ``pyproject.toml`` reads it from here."""

__version__ = "0.1.0"
