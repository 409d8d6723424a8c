"""The `atencion` command line: one entry point for training, evaluation, the Hub, serving and inspection."""

__version__ = "0.1.0"
