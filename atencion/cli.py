"""`atencion SUBCOMMAND …`: one module per subcommand in ``atencion/commands/``, driving the packages below.

A subcommand module exposes ``add_arguments(parser)`` and ``run(args) -> int``; only the chosen one is
imported, so `atencion train` never pays for importing the service.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from atencion import __version__

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("atencion.commands.train", "train a model from a recipe on a folder of text"),
    "evaluate": ("atencion.commands.evaluate", "perplexity / masked-LM accuracy next to an n-gram baseline"),
    "release": (
        "atencion.commands.release",
        "make a training run into a folder to ship (card, examples, sums)",
    ),
    "push": ("atencion.commands.push", "upload a checkpoint to the Hugging Face Hub"),
    "pull": ("atencion.commands.pull", "download a checkpoint from the Hub into the local cache"),
    "generate": ("atencion.commands.generate", "continue a prompt with a decoder checkpoint"),
    "fill-mask": ("atencion.commands.fill_mask", "fill [MASK] tokens with an encoder checkpoint"),
    "translate": ("atencion.commands.translate", "translate Spanish with a translator checkpoint"),
    "export": ("atencion.commands.export", "write a checkpoint as a folder Hugging Face transformers loads"),
    "serve": ("atencion.commands.serve", "start the HTTP service"),
    "inspect": ("atencion.commands.inspect", "draw every layer and head's attention as a PNG"),
    "plot": ("atencion.commands.plot", "the workshop's pictures: positions, noam, next-token, embeddings"),
}


def build_parser(chosen: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="atencion", description="Small Transformers, dense and sparse attention."
    )
    parser.add_argument("--version", action="version", version=f"atencion {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            importlib.import_module(module).add_arguments(command)
    return parser


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    chosen = next((a for a in argv if not a.startswith("-")), None)
    chosen = chosen if chosen in COMMANDS else None
    args = build_parser(chosen).parse_args(argv)
    module = importlib.import_module(COMMANDS[args.command][0])
    raise SystemExit(module.run(args))
