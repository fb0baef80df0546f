"""The package version, read by ``mlcl.__init__`` and written into checkpoints."""

__version__ = "0.1.0"
