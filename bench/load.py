"""Load test of the service: requests/s and p50/p99 latency at concurrency 1, 8 and 32.

- ``/fill-mask`` with dynamic batching on (``--max-batch-size 32 --batch-timeout 0.01``) and off
  (``--max-batch-size 1``), same server code, same weights;
- ``/generate`` (greedy, 16 new tokens; both servers run the same continuous-batching engine: see ``--generation``
  for generation under load);
- the same requests against a plain baseline: one uvicorn process running transformers' ``pipeline``
  (``fill-mask`` on ``BertForMaskedLM``, ``text-generation`` on ``LlamaForCausalLM``) on the same weights.
  Before timing, the baseline's answers are checked to equal ours (top fill-mask token, greedy text), so the
  comparison is like for like.

Models: the shipped checkpoints when they exist (then no baseline: the shipped encoder is pre-norm, which no
transformers class computes); otherwise random-init models of the shipped size (4 layers × 256, vocabulary
8000), a BERT-shaped encoder and a Llama-shaped decoder (the decoder recipe's architecture), built with
``modeling.interop``'s mappings. Random weights cost the same per token as trained ones.

The load generator runs on the same machine as the servers, and other jobs share the 2 cores: read the
ratios, not the absolute numbers.

    python -m bench.load            # writes the `service` section of docs/benchmarks.md
    python -m bench.load --quick    # fewer requests, prints only

Generation under load (``--generation``, the `generation` section): aggregate generated tokens/s and p50/p99
time to first token at concurrency 1, 8 and 32 (64 new tokens, greedy, prompts of mixed lengths), for the
continuous-batching engine, the same engine with one row (``ATENCION_MAX_RUNNING=1``: the batch-1 engine, same
code and weights) and transformers' ``text-generation`` pipeline on the same weights (exported with
``modeling.interop``). Streams are read to measure the first token; the pipeline has no stream, so its
"first token" is the whole answer.

    python -m bench.load --generation
    python -m bench.load --generation-profile   # the engine alone (no HTTP): batch 1 vs 32, and a profile
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

from bench.report import machine, write_section

REPO = Path(__file__).resolve().parent.parent
BASELINE = "transformers pipeline (plain FastAPI)"
FILL = {
    "inputs": "El niño juega con su [MASK] en el parque después de la escuela.",
    "parameters": {"top_k": 5},
}
PARAGRAPH = {  # a longer input: more of the time goes to the forward, less to the HTTP round trip
    "inputs": " ".join(
        [
            "Los niños juegan en el parque después de la escuela y sus padres los esperan en la calle.",
            "Mañana vamos a la playa con mis amigos si el sol brilla y el cielo está azul.",
            "El señor compra pan y leche en la tienda, luego vuelve a su casa por la estación.",
            "Mi madre cocina una sopa muy rica mientras mi hermano escribe una carta a su [MASK].",
            "Nosotros vivimos en una ciudad pequeña donde el tren sale a las ocho de la mañana.",
        ]
    ),
    "parameters": {"top_k": 5},
}
GENERATE = {"inputs": "Mañana vamos a la playa con mis amigos y", "parameters": {"max_new_tokens": 16}}
SENTENCES = [
    "El gato duerme en la casa.",
    "La niña lee un libro en el jardín.",
    "¿Dónde está el perro? Está en la calle.",
    "Mañana vamos a la playa con mis amigos.",
    "El niño juega con su pelota en el parque después de la escuela.",
    "Mi madre cocina una sopa muy rica.",
]


# ---- models ---------------------------------------------------------------------------------------------------
def prepare_models(root: Path) -> tuple[Path, Path, Path | None, str]:
    """(encoder dir, decoder dir, baseline dir or None, description)."""
    shipped = REPO / "checkpoints"
    if (shipped / "encoder-dense" / "config.json").is_file() and (
        shipped / "decoder-dense" / "config.json"
    ).is_file():
        return (
            shipped / "encoder-dense",
            shipped / "decoder-dense",
            None,
            "shipped encoder-dense and decoder-dense",
        )
    import torch

    from bench.models import BERT, LLAMA, copy_weights, hf_bert, hf_llama
    from modeling.checkpoint import save_checkpoint
    from modeling.decoder import Decoder
    from modeling.encoder import Encoder
    from training.tokenizer import train_bpe, train_wordpiece

    torch.manual_seed(0)
    hf_encoder, hf_decoder = hf_bert(), hf_llama()
    encoder, decoder = Encoder(BERT).eval(), Decoder(LLAMA).eval()
    copy_weights(hf_encoder, encoder)
    copy_weights(hf_decoder, decoder)
    wordpiece, bpe = train_wordpiece(SENTENCES * 4, 400), train_bpe(SENTENCES * 4, 400)
    save_checkpoint(encoder, wordpiece, root / "encoder-dense")
    save_checkpoint(decoder, bpe, root / "decoder-dense")
    baseline = root / "baseline"
    hf_encoder.save_pretrained(baseline / "encoder")
    hf_decoder.save_pretrained(baseline / "decoder")
    wordpiece.save(str(baseline / "encoder" / "tokenizer.json"))
    bpe.save(str(baseline / "decoder" / "tokenizer.json"))
    return (
        root / "encoder-dense",
        root / "decoder-dense",
        baseline,
        "random-init, shipped size (4 × 256, V 8000)",
    )


# ---- the baseline server ------------------------------------------------------------------------------------
def baseline_app(directory: Path):
    """A plain FastAPI app around transformers' pipelines (what one writes without a serving framework), with
    atencion's thread setting (one torch thread: two threads per process spin against each other here)."""
    import torch
    import transformers

    torch.set_num_threads(1)
    from fastapi import FastAPI

    encoder_tok = transformers.PreTrainedTokenizerFast(
        tokenizer_file=str(directory / "encoder" / "tokenizer.json"),
        mask_token="[MASK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]", unk_token="[UNK]",
    )  # fmt: skip
    decoder_tok = transformers.PreTrainedTokenizerFast(
        tokenizer_file=str(directory / "decoder" / "tokenizer.json"),
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
    )
    fill = transformers.pipeline(
        "fill-mask",
        model=transformers.AutoModelForMaskedLM.from_pretrained(directory / "encoder"),
        tokenizer=encoder_tok,
    )
    generate = transformers.pipeline(
        "text-generation",
        model=transformers.AutoModelForCausalLM.from_pretrained(directory / "decoder"),
        tokenizer=decoder_tok,
    )
    app = FastAPI()

    @app.get("/health")
    def health() -> str:
        return "ok"

    @app.post("/fill-mask")
    def fill_mask(body: dict) -> list:
        return fill(body["inputs"], top_k=body.get("parameters", {}).get("top_k", 5))

    @app.post("/generate")
    def generate_text(body: dict) -> dict:
        new = body.get("parameters", {}).get("max_new_tokens", 16)
        out = generate(
            body["inputs"],
            max_new_tokens=new,
            do_sample=False,
            return_full_text=False,
            add_special_tokens=True,
        )
        return {"generated_text": out[0]["generated_text"]}

    return app


# ---- running servers ----------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start(command: list[str], port: int, log: Path, extra: dict[str, str] | None = None) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATENCION_")}
    env.update(extra or {})
    env.update({"TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"})
    process = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if requests.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return process
        except requests.RequestException:
            pass
        time.sleep(0.3)
    stop(process)
    raise RuntimeError(f"server did not start: {log.read_text(errors='replace')[-3000:]}")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def load(url: str, body: dict, concurrency: int, total: int) -> dict:
    """``total`` requests from ``concurrency`` threads (each its own connection): latencies, wall time."""
    latencies: list[float] = []
    failures = [0]
    lock = threading.Lock()
    per_client = max(1, total // concurrency)

    def client() -> None:
        session = requests.Session()
        for _ in range(per_client):
            began = time.perf_counter()
            response = session.post(url, json=body, timeout=300)
            took = time.perf_counter() - began
            with lock:
                latencies.append(took)
                failures[0] += response.status_code != 200

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"latencies": latencies, "wall": time.perf_counter() - began, "failed": failures[0]}


def batches(base: str, path: str) -> tuple[float, float]:
    """(requests, batches) the server's ``atencion_batch_size`` histogram has seen on ``path``; zeros elsewhere."""
    seen = {"sum": 0.0, "count": 0.0}
    for line in requests.get(base + "/metrics", timeout=30).text.splitlines():
        for key in seen:
            if line.startswith(f'atencion_batch_size_{key}{{path="{path}"}}'):
                seen[key] = float(line.rsplit(" ", 1)[1])
    return seen["sum"], seen["count"]


def interleaved(servers: dict[str, str], path: str, body: dict, counts: dict[int, int], rounds: int):
    """For each concurrency, ``rounds`` rounds; in each, every server gets its share in turn (the order rotates),
    so a change in the machine's load during the run hits every server alike. Returns name -> c -> stats."""
    for base in servers.values():
        for _ in range(3):  # warm-up
            requests.post(base + path, json=body, timeout=120)
    out: dict[str, dict[int, dict[str, float]]] = {name: {} for name in servers}
    names = list(servers)
    for c, total in counts.items():
        parts: dict[str, list[dict]] = {name: [] for name in names}
        for r in range(rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                ours = name.startswith("atencion")
                before = batches(servers[name], path) if ours else (0.0, 0.0)
                run = load(servers[name] + path, body, c, max(c, total // rounds))
                after = batches(servers[name], path) if ours else (0.0, 0.0)
                run["batched"] = (after[0] - before[0], after[1] - before[1])
                parts[name].append(run)
        for name, runs in parts.items():
            latencies = sorted(x for run in runs for x in run["latencies"])
            out[name][c] = {
                "rps": len(latencies) / sum(run["wall"] for run in runs),
                "p50": 1000 * statistics.median(latencies),
                "p99": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
                "failed": sum(run["failed"] for run in runs),
                "n": len(latencies),
                "batch": sum(run["batched"][0] for run in runs)
                / max(1.0, sum(run["batched"][1] for run in runs)),
            }
    return out


# ---- report ---------------------------------------------------------------------------------------------------
def table(rows: list[tuple[str, dict[int, dict[str, float]]]], reference: str) -> str:
    lines = [
        "| server | concurrency | requests | req/s | p50 ms | p99 ms | failed | mean batch | × "
        + reference
        + " |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    ref = dict(rows)[reference]
    for name, by_c in rows:
        for c, r in by_c.items():
            ratio = r["rps"] / ref[c]["rps"]
            batch = f"{r['batch']:.1f}" if name.startswith("atencion") else "–"
            lines.append(
                f"| {name} | {c} | {r['n']} | {r['rps']:.1f} | {r['p50']:.0f} | {r['p99']:.0f} | {r['failed']} | "
                f"{batch} | {ratio:.2f} |"
            )
    return "\n".join(lines)


# ---- generation under load ------------------------------------------------------------------------------------
GEN_PROMPTS = [  # mixed lengths: a few words to a paragraph
    "Hola",
    "Mañana vamos a la playa con mis amigos y",
    "El niño juega con su pelota en el parque después de la escuela, mientras su madre",
    PARAGRAPH["inputs"].replace("[MASK]", "amigo"),
    "La niña lee un libro en el jardín.",
    "Los niños juegan en el parque después de la escuela y sus padres los esperan en la calle. Luego",
]
NEW_TOKENS = 64


def baseline_generation_app(directory: Path):
    """transformers' text-generation pipeline around the exported decoder; answers with the new-token count."""
    import torch
    import transformers

    torch.set_num_threads(1)
    from fastapi import FastAPI

    tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
    model = transformers.AutoModelForCausalLM.from_pretrained(directory)
    generate = transformers.pipeline("text-generation", model=model, tokenizer=tokenizer)
    app = FastAPI()

    @app.get("/health")
    def health() -> str:
        return "ok"

    @app.post("/generate")
    def generate_text(body: dict) -> dict:
        new = body.get("parameters", {}).get("max_new_tokens", NEW_TOKENS)
        prompt_ids = tokenizer(body["inputs"])["input_ids"]
        out = generate(body["inputs"], max_new_tokens=new, do_sample=False, return_tensors=True)
        ids = out[0]["generated_token_ids"]
        return {"generated_tokens": len(ids) - len(prompt_ids), "generated_text": tokenizer.decode(ids)}

    return app


def stream_once(
    session: requests.Session, base: str, prompt: str, streaming: bool
) -> tuple[float, float, int]:
    """(seconds to the first token, seconds in all, tokens generated) for one request."""
    body = {"inputs": prompt, "parameters": {"max_new_tokens": NEW_TOKENS, "details": True}}
    began = time.perf_counter()
    if not streaming:
        answer = session.post(base + "/generate", json=body, timeout=600)
        took = time.perf_counter() - began
        answer.raise_for_status()
        data = answer.json()
        tokens = data.get("generated_tokens") or data["details"]["generated_tokens"]
        return took, took, tokens
    first, tokens = None, 0
    with session.post(base + "/generate_stream", json=body, stream=True, timeout=600) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if line.startswith(b"data:"):
                event = json.loads(line[5:])
                if "error" in event:
                    raise RuntimeError(event["error"])
                first = first if first is not None else time.perf_counter() - began
                tokens += 1
    return first, time.perf_counter() - began, tokens


def generation_round(base: str, concurrency: int, per_client: int, streaming: bool) -> dict:
    results: list[tuple[float, float, int]] = []
    failures = [0]
    lock = threading.Lock()

    def client(index: int) -> None:
        session = requests.Session()
        for k in range(per_client):
            prompt = GEN_PROMPTS[(index + k) % len(GEN_PROMPTS)]
            try:
                result = stream_once(session, base, prompt, streaming)
            except Exception:  # noqa: BLE001 — counted, reported
                with lock:
                    failures[0] += 1
                continue
            with lock:
                results.append(result)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(concurrency)]
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"results": results, "wall": time.perf_counter() - began, "failed": failures[0]}


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) used so far by process ``pid`` and its living descendants (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return 0.0
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return own + sum(tree_cpu_seconds(int(child)) for child in children)


def generation_bench(quick: bool) -> None:
    from modeling.checkpoint import load_checkpoint
    from modeling.interop import export_transformers

    load_before = os.getloadavg()
    began = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="atencion-genload-"))
    decoder = REPO / "checkpoints" / "decoder-dense"
    export_transformers(load_checkpoint(decoder), work / "hf")
    serve = [sys.executable, "-m", "atencion", "serve", "--decoder", str(decoder)]
    configs = {
        "atencion, continuous batching": (serve, {"ATENCION_MAX_RUNNING": "32"}),
        "atencion, batch-1 engine": (serve, {"ATENCION_MAX_RUNNING": "1", "ATENCION_MAX_WAITING": "64"}),
        BASELINE: ([sys.executable, "-m", "bench.load", "--generation-baseline", str(work / "hf")], {}),
    }
    counts = {1: 4, 8: 16, 32: 32} if quick else {1: 8, 8: 32, 32: 64}
    rounds = 1 if quick else 2
    processes, servers = [], {}
    stats: dict[str, dict[int, dict]] = {name: {} for name in configs}
    try:
        for index, (name, (command, env)) in enumerate(configs.items()):
            port = free_port()
            processes.append(start([*command, "--port", str(port)], port, work / f"gen-{index}.log", env))
            servers[name] = f"http://127.0.0.1:{port}"
        for name, base in servers.items():  # warm-up
            generation_round(base, 2, 1, streaming=name != BASELINE)
        names = list(servers)
        for c, total in counts.items():
            runs: dict[str, list[dict]] = {name: [] for name in names}
            for r in range(rounds):
                for name in names[r % len(names) :] + names[: r % len(names)]:
                    per_client = max(1, total // rounds // c)
                    pid = processes[names.index(name)].pid
                    cpu = tree_cpu_seconds(pid)
                    part = generation_round(servers[name], c, per_client, streaming=name != BASELINE)
                    part["cpu"] = tree_cpu_seconds(pid) - cpu
                    runs[name].append(part)
            for name, parts in runs.items():
                results = [x for part in parts for x in part["results"]]
                first = sorted(x[0] for x in results)
                stats[name][c] = {
                    "tps": sum(x[2] for x in results) / sum(part["wall"] for part in parts),
                    "cpu": 1e6 * sum(part["cpu"] for part in parts) / max(1, sum(x[2] for x in results)),
                    "p50": 1000 * statistics.median(first),
                    "p99": 1000 * first[min(len(first) - 1, int(0.99 * len(first)))],
                    "n": len(results),
                    "failed": sum(part["failed"] for part in parts),
                    "tokens": statistics.mean(x[2] for x in results),
                }
    finally:
        for process in processes:
            stop(process)
    reference = "atencion, batch-1 engine"
    lines = [
        "| server | concurrency | requests | tokens/request | tokens/s | × batch-1 engine | server CPU µs/token | "
        "× batch-1 engine (CPU) | p50 TTFT ms | p99 TTFT ms | failed |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, by_c in stats.items():
        for c, r in by_c.items():
            ratio = r["tps"] / stats[reference][c]["tps"]
            cpu_ratio = stats[reference][c]["cpu"] / r["cpu"]
            lines.append(
                f"| {name} | {c} | {r['n']} | {r['tokens']:.1f} | {r['tps']:.1f} | {ratio:.2f} | {r['cpu']:.0f} | "
                f"{cpu_ratio:.2f} | {r['p50']:.0f} | {r['p99']:.0f} | {r['failed']} |"
            )
    minutes = (time.monotonic() - began) / 60
    markdown = "\n".join(
        [
            "## Generation under load (bench/load.py --generation)",
            "",
            "Command: `python -m bench.load --generation`  ",
            f"Machine: {machine()}  ",
            f"Model: shipped decoder-dense; {NEW_TOKENS} new tokens, greedy, {len(GEN_PROMPTS)} prompts of mixed "
            f"lengths in turn. Load average before the run: {load_before[0]:.2f}, after: {os.getloadavg()[0]:.2f}: "
            "**other jobs may share the cores, and the load generator runs beside the servers** — "
            f"compare ratios; each server's share runs in interleaved rounds. Run took {minutes:.1f} min.",
            "",
            "All three servers run at once, one torch thread each for generation. atencion twice, same code and "
            "weights: its continuous-batching engine (32 rows) and the same engine with one row (the batch-1 "
            "engine). The baseline is transformers' `text-generation` pipeline in a plain FastAPI app (one "
            "request at a time per thread of its pool). TTFT = time to first token, from sending the request to "
            "the first streamed event (the baseline does not stream: its TTFT is the whole answer). Server CPU "
            "µs/token: the CPU time of the server's processes (all threads, all children) during its rounds over "
            "the tokens they generated — steadier than tokens/s when other jobs share the cores.",
            "",
            "\n".join(lines),
        ]
    )
    print(markdown)
    if not quick:
        write_section("generation", markdown)


def generation_profile() -> None:
    """The engine in-process, no HTTP: tokens/s with one row and with 32, then where a 32-row run spends its time."""
    import cProfile
    import pstats

    import torch

    from modeling.checkpoint import load_checkpoint
    from modeling.generation import Sampling
    from service.engine import Engine

    torch.set_num_threads(1)
    checkpoint = load_checkpoint(REPO / "checkpoints" / "decoder-dense")
    prompts = [checkpoint.tokenizer.encode(p).ids for p in GEN_PROMPTS]

    def run(n: int, rows: int, profile: cProfile.Profile | None = None) -> tuple[float, float]:
        """(tokens/s, CPU µs per token of this process) for ``n`` requests through an engine of ``rows`` rows."""
        engine = Engine(checkpoint.model, checkpoint.tokenizer, max_running=rows, max_waiting=256, threads=1)
        generations = [
            engine.submit(prompts[i % len(prompts)], Sampling(max_new_tokens=NEW_TOKENS)) for i in range(n)
        ]
        began, cpu = time.perf_counter(), time.process_time()
        if profile is not None:
            engine._thread = threading.Thread(
                target=lambda: (profile.enable(), engine._loop(), profile.disable())
            )
            engine._thread.start()
        else:
            engine.start()
        tokens = sum(len(list(g)) for g in generations)
        took, cpu = time.perf_counter() - began, time.process_time() - cpu
        engine.stop()
        return tokens / took, 1e6 * cpu / tokens

    for _ in range(3):
        (one, one_cpu), (many, many_cpu) = run(8, 1), run(32, 32)
        print(
            f"engine alone: 1 row {one:.1f} tokens/s ({one_cpu:.0f} CPU µs/token), 32 rows {many:.1f} tokens/s "
            f"({many_cpu:.0f} CPU µs/token): {many / one:.2f}x tokens/s, {one_cpu / many_cpu:.2f}x CPU per token "
            f"(load average {os.getloadavg()[0]:.1f})"
        )
    profile = cProfile.Profile()
    run(32, 32, profile)
    pstats.Stats(profile).sort_stats("tottime").print_stats(12)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests; print, don't write the report")
    parser.add_argument("--generation", action="store_true", help="generation under load (its own section)")
    parser.add_argument("--generation-profile", action="store_true", help="the engine alone, and a profile")
    parser.add_argument("--generation-baseline", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--baseline-server", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.generation_baseline:  # the child process: serve the generation baseline
        import uvicorn

        app = baseline_generation_app(args.generation_baseline)
        uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")
        return
    if args.generation:
        generation_bench(args.quick)
        return
    if args.generation_profile:
        generation_profile()
        return
    if args.baseline_server:  # the child process: serve the baseline
        import uvicorn

        uvicorn.run(baseline_app(args.baseline_server), host="127.0.0.1", port=args.port, log_level="warning")
        return

    scale = 0.25 if args.quick else 1.0
    fill_counts = {1: int(40 * scale), 8: int(160 * scale), 32: int(320 * scale)}
    gen_counts = {1: int(8 * scale), 8: int(32 * scale), 32: int(64 * scale)}
    load_before = os.getloadavg()
    began = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="atencion-load-"))
    encoder, decoder, baseline, described = prepare_models(work)
    from tokenizers import Tokenizer

    words = Tokenizer.from_file(str(encoder / "tokenizer.json"))
    lengths = [len(words.encode(body["inputs"]).ids) for body in (FILL, PARAGRAPH)]
    serve = [sys.executable, "-m", "atencion", "serve", "--encoder", str(encoder), "--decoder", str(decoder)]
    commands = {
        "atencion, batching off": [*serve, "--max-batch-size", "1"],
        "atencion, batching on": [*serve, "--max-batch-size", "32", "--batch-timeout", "0.01"],
    }
    if baseline is not None:
        commands[BASELINE] = [sys.executable, "-m", "bench.load", "--baseline-server", str(baseline)]
    processes, servers = [], {}
    try:
        for index, (name, command) in enumerate(commands.items()):
            port = free_port()
            processes.append(start([*command, "--port", str(port)], port, work / f"server-{index}.log"))
            servers[name] = f"http://127.0.0.1:{port}"
        answers = {
            name: (
                requests.post(base + "/fill-mask", json=FILL, timeout=60).json()[0]["token"],
                requests.post(base + "/generate", json=GENERATE, timeout=60).json()["generated_text"],
            )
            for name, base in servers.items()
            if name != "atencion, batching off"
        }
        rounds = 2 if args.quick else 3
        fill = interleaved(servers, "/fill-mask", FILL, fill_counts, rounds)
        paragraph_counts = {c: n // 2 for c, n in fill_counts.items()}
        paragraph = interleaved(servers, "/fill-mask", PARAGRAPH, paragraph_counts, rounds)
        generators = {n: u for n, u in servers.items() if n != "atencion, batching off"}
        gen = interleaved(generators, "/generate", GENERATE, gen_counts, rounds)
    finally:
        for process in processes:
            stop(process)
    baseline_note = "not run: the served encoder has no transformers equivalent (pre-norm)"
    if baseline is not None:
        ours, theirs = answers["atencion, batching on"], answers[BASELINE]
        baseline_note = (
            "same answers as atencion (top fill-mask token, greedy text)"
            if ours == theirs
            else f"answers differ: {json.dumps(theirs)} vs {json.dumps(ours)}"
        )
    minutes = (time.monotonic() - began) / 60
    markdown = "\n".join(
        [
            "## Service load (bench/load.py)",
            "",
            "Command: `python -m bench.load`  ",
            f"Machine: {machine()}  ",
            f"Models: {described}. Load average before the run: {load_before[0]:.2f}, after: {os.getloadavg()[0]:.2f} "
            "(other jobs share the 2 cores, and the load generator runs beside the servers: compare "
            f"ratios; each server's share runs in interleaved rounds). Run took {minutes:.1f} min.",
            "",
            "All servers run at once: atencion twice (one uvicorn API process each, one inference worker per "
            "endpoint, one torch thread per worker), and the baseline: one uvicorn process, FastAPI's thread "
            "pool calling transformers' `pipeline`, also one torch thread. Requests are sent by threads, "
            "each with its own keep-alive connection.",
            "",
            f"### POST /fill-mask (one sentence, {lengths[0]} tokens, top_k 5); × = throughput relative to batching off",
            "",
            table(list(fill.items()), "atencion, batching off"),
            "",
            f"### POST /fill-mask (a five-sentence paragraph, {lengths[1]} tokens, top_k 5)",
            "",
            table(list(paragraph.items()), "atencion, batching off"),
            "",
            "### POST /generate (greedy, 16 new tokens; the same generation engine in both atencion servers)",
            "",
            table(list(gen.items()), "atencion, batching on"),
            "",
            f"Baseline check: {baseline_note}. Generation runs on atencion's continuous-batching engine (one "
            "running batch per decoder); `python -m bench.load --generation` measures it under load.",
        ]
    )
    print(markdown)
    if not args.quick:
        write_section("service", markdown)


if __name__ == "__main__":
    main()
