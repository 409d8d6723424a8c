"""POST /attention's work and payload: ``service.inspection.analyse`` on models of the shipped recipes' shape.

For each model (random init: the shapes, not the weights, set the cost) at ~500 tokens, all layers and heads:
the time of ``analyse`` with and without gradient × attention, the JSON payload's size raw and gzipped
(levels 1, 6 and 9: Starlette's GZipMiddleware defaults to 9), and, as the baseline measured in the same run,
the same probabilities as nested JSON floats rounded to 4 decimals (what a naive endpoint sends).

    python -m bench.inspection [--tokens 500] [--repeats 3]
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import time

import torch

from bench.report import machine, write_section
from modeling.checkpoint import build_model
from modeling.config import AttentionConfig, DecoderConfig, EncoderConfig
from service.inspection import analyse
from training.tokenizer import train_bpe, train_wordpiece

PARAGRAPH = (
    "¿Dónde está la niña? Está en el jardín con su abuela, que riega las flores cada mañana. "
    "El perro duerme a la sombra del olivo mientras los pájaros cantan. ¡Qué tranquila es la tarde! "
    "Mañana iremos al mercado: compraremos pan, queso, tomates y un poco de miel para el desayuno. "
)
SHAPE = dict(d_model=256, n_layers=4, n_heads=4, d_ff=1024, max_len=1024, dropout=0.0)


def models(vocab_wordpiece: int, vocab_bpe: int) -> dict[str, torch.nn.Module]:
    bigbird = AttentionConfig(pattern="bigbird", block_size=32, window=64, globals=1, randoms=1)
    strided = AttentionConfig(pattern="strided", block_size=64, window=128, stride=128)
    configs = {
        "encoder-dense": EncoderConfig(vocab_size=vocab_wordpiece, mask_token_id=4, **SHAPE),
        "encoder-bigbird": EncoderConfig(
            vocab_size=vocab_wordpiece, mask_token_id=4, attention=bigbird, **SHAPE
        ),
        "decoder-dense": DecoderConfig(vocab_size=vocab_bpe, bos_token_id=1, eos_token_id=2, **SHAPE),
        "decoder-strided": DecoderConfig(
            vocab_size=vocab_bpe, bos_token_id=1, eos_token_id=2, attention=strided, **SHAPE
        ),
    }
    torch.manual_seed(0)
    return {name: build_model(config).eval() for name, config in configs.items()}


def text_of(tokenizer, tokens: int) -> str:
    """The paragraph repeated and cut to at most ``tokens`` tokens."""
    words = (PARAGRAPH * (tokens // 20 + 2)).split()
    while len(tokenizer.encode(" ".join(words)).ids) > tokens:
        words = words[: -max(1, len(words) // 50)]
    return " ".join(words)


def timed(function, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    corpus = [PARAGRAPH] * 50
    wordpiece, bpe = train_wordpiece(corpus, 400), train_bpe(corpus, 400)
    rows = []
    for name, model in models(wordpiece.get_vocab_size(), bpe.get_vocab_size()).items():
        tokenizer = wordpiece if name.startswith("encoder") else bpe
        text = text_of(tokenizer, args.tokens)

        def run(gradient: bool, model=model, tokenizer=tokenizer, text=text) -> dict:
            return analyse(model, tokenizer, text, max_tokens=1024, max_cells=10**9, gradient=gradient)

        with_gradient, payload = timed(lambda run=run: run(True), args.repeats)
        without, _ = timed(lambda run=run: run(False), args.repeats)
        body = json.dumps(payload).encode()
        gz = {
            level: timed(lambda level=level, body=body: gzip.compress(body, compresslevel=level), 1)
            for level in (1, 6, 9)
        }
        ids = torch.tensor([tokenizer.encode(text).ids])  # (1, n)
        with torch.inference_mode():
            probs = [
                a[0].numpy().round(4).astype(float).tolist() for a in model(ids, need_weights=True).attentions
            ]
        naive_time, naive = timed(lambda probs=probs: json.dumps(probs).encode(), 1)
        rows.append(
            f"| {name} | {payload['n_tokens']} | {payload['cells'] / 1e6:.2f} M | {with_gradient:.2f} s | "
            f"{without:.2f} s | {len(body) / 1e6:.2f} MB | "
            + " | ".join(f"{len(gz[level][1]) / 1e6:.2f} MB, {gz[level][0]:.2f} s" for level in (1, 6, 9))
            + f" | {len(naive) / 1e6:.1f} MB, {naive_time:.2f} s | {len(naive) / len(body):.1f}× |"
        )
        print(rows[-1], flush=True)
    write_section(
        "inspection",
        "## Attention inspection (POST /attention's `analyse`)\n\n"
        f"Command: `python -m bench.inspection --tokens {args.tokens} --repeats {args.repeats}`; machine: "
        f"{machine()}. Random-init models of the shipped recipes' shape (4 layers × 4 heads × 256); all layers "
        "and heads requested; times are medians, taken while other jobs loaded the same 2 cores (expect "
        "±50%). Baseline, same run: the same probabilities as nested JSON floats with 4 decimals.\n\n"
        "| model | tokens | attention values sent | analyse (with grad×attn) | analyse (maps only) | payload | "
        "gzip 1 | gzip 6 | gzip 9 | baseline JSON floats | baseline / payload |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n\n"
        "Sparse layouts send only their entries (the layout mask is the index), so `attention values sent` falls "
        "with the layout's density; the gradient maps, the rollout and the layout masks add about n² bytes per "
        "layer on top. gzip: level 9 (Starlette's default) buys a few percent over level 6 at 2–3× the time.",
    )


if __name__ == "__main__":
    main()
