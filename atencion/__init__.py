"""The `atencion` command line: one entry point for training, evaluation, the Hub, serving and inspection."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("atencion")  # pyproject.toml's, through the installed package's metadata
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"
