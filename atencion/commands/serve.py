"""`atencion serve`: the HTTP service (fill-mask, generate, generate_stream, attention) on LitServe.

Every flag has an ``ATENCION_*`` environment variable for containers (flags win); see ``service.settings``.
With no ``--encoder`` / ``--decoder`` / ``--translator`` the shipped checkpoints in ``checkpoints/`` are served.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--encoder",
        action="append",
        dest="encoders",
        metavar="REF",
        help="an encoder checkpoint directory or ORG/NAME@REVISION (repeatable; env ATENCION_ENCODERS, comma-separated)",
    )
    parser.add_argument(
        "--decoder",
        action="append",
        dest="decoders",
        metavar="REF",
        help="a decoder checkpoint directory or ORG/NAME@REVISION (repeatable; env ATENCION_DECODERS)",
    )
    parser.add_argument(
        "--translator",
        action="append",
        dest="translators",
        metavar="REF",
        help="a translator checkpoint directory or ORG/NAME@REVISION (repeatable; env ATENCION_TRANSLATORS)",
    )
    parser.add_argument("--host", help="127.0.0.1 (default), 0.0.0.0 or :: (env ATENCION_HOST)")
    parser.add_argument("--port", type=int, help="default 8000 (env ATENCION_PORT)")
    parser.add_argument(
        "--accelerator", choices=("auto", "cpu", "cuda"), help="default auto (env ATENCION_ACCELERATOR)"
    )
    parser.add_argument(
        "--workers-per-device", type=int, help="inference workers per API and device (default 1)"
    )
    parser.add_argument("--max-batch-size", type=int, help="fill-mask dynamic batch size (default 16)")
    parser.add_argument("--batch-timeout", type=float, help="seconds to wait to fill a batch (default 0.01)")
    parser.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16"),
        help="fill-mask: auto (default) serves bf16 where a start-up check on fixed Spanish sentences gives "
        "fp32's top-1 and top-5 (env ATENCION_PRECISION)",
    )
    parser.add_argument(
        "--api-key",
        help="require this X-API-Key on the API routes and /info (prefer env ATENCION_API_KEY: flags show in ps)",
    )

    parser.add_argument(
        "--decoding",
        choices=("eager", "compiled"),
        help="decoders' one-token step: eager (default) or compiled with torch.compile, built at start-up "
        "(env ATENCION_DECODING)",
    )
    parser.add_argument(
        "--quantize",
        choices=("none", "int8"),
        help="decoders' weights: none (default) or int8 (env ATENCION_QUANTIZE); encoders are faster in bf16 "
        "(--precision) than in int8, measured in docs/benchmarks.md",
    )


def run(args: argparse.Namespace) -> int:
    from service.settings import SettingsError, load_settings

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # the API server is forked after tokenizing
    flags = {
        "encoders": args.encoders,
        "decoders": args.decoders,
        "translators": args.translators,
        "host": args.host,
        "port": args.port,
        "accelerator": args.accelerator,
        "workers_per_device": args.workers_per_device,
        "max_batch_size": args.max_batch_size,
        "batch_timeout": args.batch_timeout,
        "api_key": args.api_key,
        "decoding": args.decoding,
        "quantize": args.quantize,
        "precision": args.precision,
    }
    try:
        settings = load_settings(flags)
    except SettingsError as error:
        print(f"atencion serve: {error}", file=sys.stderr)
        return 2

    # prometheus_client reads PROMETHEUS_MULTIPROC_DIR at import: set it before anything imports it
    created = "PROMETHEUS_MULTIPROC_DIR" not in os.environ
    from service.settings import prepare_multiprocess_dir

    directory = prepare_multiprocess_dir()
    try:
        from service.models import ServeError, check_startup, resolve_all

        try:
            models = resolve_all(settings)
            check_startup(settings, models)
        except ServeError as error:
            print(f"atencion serve: {error}", file=sys.stderr)
            return 2
        from service.app import serve

        names = ", ".join(f"{m.name} ({m.kind})" for m in models)
        print(
            f"atencion serve: {names} on http://{settings.host}:{settings.port}", file=sys.stderr, flush=True
        )
        serve(settings, models)
    finally:
        if created:
            shutil.rmtree(directory, ignore_errors=True)
    return 0
