"""The version of rnnlab, in a module of its own so that low modules can name it without
importing the whole package (rnnlab/__init__.py imports nearly everything)."""

__version__ = "0.1.0"
