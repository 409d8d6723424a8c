"""`atencion export CKPT --to transformers OUT`: a folder that Hugging Face transformers loads as its own model.

CKPT is a checkpoint directory, a shipped checkpoint name (checkpoints/NAME) or a Hub ``ORG/NAME[@REV]``. An
encoder that is a BERT becomes a ``BertForMaskedLM``, a decoder that is a Llama a ``LlamaForCausalLM``
(the shipped ``decoder-dense`` is one), with the same logits; the folder also holds the tokenizer files and, for a
decoder, ``generation_config.json``. A config transformers cannot express exactly (a sparse layout, another score
function, a norm placement, RoPE in an encoder, …) is an error naming the field. Needs ``atencion[export]``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from atencion.references import UsageError, open_checkpoint, run_guarded


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="checkpoint directory, shipped name, or Hub ORG/NAME[@REVISION]")
    parser.add_argument("--to", required=True, choices=["transformers"], help="the format to write")
    parser.add_argument("out", help="the folder to write (new or empty)")


def _export(args: argparse.Namespace) -> int:
    from modeling.interop import InteropError, export_transformers, hf_config

    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"out: {str(out)!r} exists and is not an empty folder")
    checkpoint = open_checkpoint(args.checkpoint, kind=None)
    try:
        hf_config(checkpoint.config)
    except InteropError as error:
        raise UsageError(f"checkpoint: transformers cannot express this model exactly: {error}") from None
    except ImportError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    export_transformers(checkpoint, out)
    kind = "AutoModelForMaskedLM" if checkpoint.config.kind == "encoder" else "AutoModelForCausalLM"
    print(f"wrote {out} ({kind}.from_pretrained loads it)", file=sys.stderr)
    print(out)
    return 0


def run(args: argparse.Namespace) -> int:
    return run_guarded(_export, args)
