"""rumpfs: bake a directory tree into a filesystem image and a linkable object."""

__version__ = "0.1.0"
