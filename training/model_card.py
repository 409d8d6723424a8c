"""The model card: README.md with YAML metadata, built from what a checkpoint directory records about itself.

Reads ``config.json`` (required), and when present ``tokenizer.json``, ``model.safetensors`` (its header only,
for the parameter count), ``training.json`` (written by the training loop), ``evaluation.json`` (written by
``atencion evaluate --save``) and ``samples.json``. Nothing optional is invented: a missing file becomes
"not recorded" / "not evaluated" in the card. Card format: the Hub's model cards (Mitchell et al. 2019,
"Model Cards for Model Reporting"), metadata through ``huggingface_hub.ModelCardData``.

Fields read, all optional:
- training.json: ``recipe`` (str or mapping), ``corpus`` (str), ``datasets`` (Hub dataset ids), ``license``,
  ``split`` ({"train": [names], "validation": [names]}), ``works`` (per document: file, split, title, author,
  gutenberg_id), ``tokens_seen``, ``steps``, ``wall_time_s``, ``hardware``, ``command``, ``stopped``.
- evaluation.json: ``metrics`` and ``baseline`` (name → number), ``baseline_name``, ``corpus``, ``split``.
- samples.json: a list of {"input", "output"} (or "prompt"/"completion").
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCardData

from modeling import safetensors_header
from modeling.config import ModelConfig, load_config

DEFAULT_LICENSE = "apache-2.0"
# evaluation names → (model-index metric type, readable name); counts such as "tokens" are not metrics.
METRICS = {
    "loss": ("loss", "cross-entropy loss (nats/token)"),
    "perplexity": ("perplexity", "perplexity"),
    "pseudo_perplexity": ("perplexity", "pseudo-perplexity"),
    "top1": ("accuracy", "top-1 accuracy (masked tokens)"),
    "top5": ("accuracy", "top-5 accuracy (masked tokens)"),
}
COUNTS = ("tokens", "masked", "count", "documents")
PIPELINE_TAGS = {"encoder": "fill-mask", "decoder": "text-generation"}
OBJECTIVES = {"encoder": "masked-LM encoder", "decoder": "causal-LM decoder"}


def read_json(path: Path) -> Any | None:
    """The JSON in ``path``, or None when the file is absent; a clear ValueError when it is not JSON."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path.name} is not valid JSON ({error})") from error


def count_parameters(weights: Path) -> int | None:
    """Number of stored parameters, from the safetensors header alone (no tensor is read); None when the file
    is absent or not a valid safetensors file."""
    if not weights.is_file():
        return None
    try:
        header = safetensors_header.read(weights)
    except safetensors_header.HeaderError:
        return None
    return sum(math.prod(info["shape"]) for info in header.values())


def describe_tokenizer(path: Path) -> str:
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        return "not recorded"
    model = data["model"]
    vocab = model.get("vocab") or {}
    added = {token.get("content") for token in data.get("added_tokens") or []} - set(vocab)
    specials = [t["content"] for t in data.get("added_tokens") or [] if t.get("special")]
    text = f"{model.get('type', 'unknown')}, {len(vocab) + len(added):,} tokens"
    return text + (f"; special tokens {' '.join(f'`{s}`' for s in specials)}" if specials else "")


def describe_attention(config: ModelConfig) -> str:
    attention = config.attention
    parts = [
        f"{name} {getattr(attention, name)}" for name in ("window", "stride", "summary", "globals", "randoms")
    ]
    parameters = ", ".join(p for p in parts if not p.endswith("None"))
    text = f"{attention.pattern}" + (f" ({parameters}, block {attention.block_size})" if parameters else "")
    if attention.dense_every:
        text += f", every {attention.dense_every}-th layer dense"
    if attention.head_windows == "growing":
        text += ", windows growing per head"
    return text + f"; score {attention.score}"


def describe_layout(config: ModelConfig) -> str | None:
    """The sparse layout in words (its function's docstring) and the share of dense attention's blocks it
    computes at the full context; None for dense attention."""
    from modeling import layouts

    causal = config.kind == "decoder"
    n, heads = config.max_len, config.n_heads
    built = [layouts.layout_for(config.attention, i, n, heads, causal) for i in range(config.n_layers)]
    sparse = [layout for layout in built if layout is not None]
    if not sparse:
        return None
    function = getattr(layouts, config.attention.pattern, None)
    summary = " ".join((function.__doc__ or "").split("\n\n")[0].split()) if function else ""
    nb = sparse[0].blocks.shape[-1]
    full = heads * (nb * (nb + 1) // 2 if causal else nb * nb)
    share = sum(int(layout.blocks.sum()) for layout in sparse) / (full * len(sparse))
    where = "causal" if causal else "dense"
    computed = f"at {n} tokens its layers compute {share:.0%} of the {nb}×{nb} {where} attention's key blocks"
    return f"{summary} Blocks of {config.attention.block_size} tokens; {computed}.".strip()


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _metadata(config: ModelConfig, training: dict, evaluation: dict | None, name: str) -> ModelCardData:
    results = []
    if evaluation and isinstance(evaluation.get("metrics"), dict):
        dataset = str(evaluation.get("corpus") or training.get("corpus") or "validation split")
        for metric, value in evaluation["metrics"].items():
            if metric in COUNTS or not isinstance(value, int | float) or not math.isfinite(value):
                continue
            kind, readable = METRICS.get(metric, (metric, metric.replace("_", " ")))
            results.append(
                EvalResult(
                    task_type=PIPELINE_TAGS[config.kind],
                    dataset_type="text",
                    dataset_name=dataset,
                    dataset_split=str(evaluation.get("split") or "validation"),
                    metric_type=kind,
                    metric_name=readable,
                    metric_value=value,
                )
            )
    datasets = training.get("datasets")
    return ModelCardData(
        language="es",
        license=str(training.get("license") or DEFAULT_LICENSE),
        library_name="atencion",
        pipeline_tag=PIPELINE_TAGS[config.kind],
        tags=["atencion", config.kind, f"attention-{config.attention.pattern}", "spanish", "from-scratch"],
        datasets=list(datasets) if isinstance(datasets, list) and datasets else None,
        model_name=name if results else None,
        eval_results=results or None,
    )


def _architecture(config: ModelConfig, parameters: int | None, tokenizer: str) -> list[str]:
    rows = [
        ("kind", OBJECTIVES[config.kind]),
        (
            "layers × heads × width",
            f"{config.n_layers} × {config.n_heads} × {config.d_model} (head {config.d_head})",
        ),
        ("feed-forward", f"{config.d_ff} ({config.feed_forward})"),
        ("positions", f"{config.position}, up to {config.max_len} tokens"),
        ("norm", f"{config.norm}, {config.norm_placement}-norm"),
        ("attention", describe_attention(config)),
        *([("layout", layout)] if (layout := describe_layout(config)) else []),
        ("parameters", _number(parameters) if parameters is not None else "not recorded"),
        ("tokenizer", tokenizer),
    ]
    return ["## Architecture", "", "| | |", "|---|---|", *[f"| {k} | {v} |" for k, v in rows], ""]


def _duration(seconds: Any) -> str | None:
    if not isinstance(seconds, int | float):
        return None
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def _training(training: dict) -> list[str]:
    lines = ["## Training data", ""]
    corpus = training.get("corpus")
    # Only the folder's name: an absolute path says where the trainer's files were, not what they were.
    if isinstance(training.get("works"), list) and training["works"]:
        lines.append(f"Corpus: {len(training['works'])} documents, listed below with their sources.")
    else:
        lines.append(f"Corpus: {Path(str(corpus)).name or corpus if corpus else 'not recorded'}.")
    split = training.get("split") if isinstance(training.get("split"), dict) else {}
    if split:
        train, valid = list(split.get("train") or []), list(split.get("validation") or [])
        shown = ", ".join(f"`{n}`" for n in valid[:10]) + (" …" if len(valid) > 10 else "")
        lines.append(
            f"Split by document (no validation text is trained on): {len(train)} training and "
            f"{len(valid)} validation documents" + (f"; validation: {shown}." if valid else ".")
        )
    lines += _works(training.get("works"))
    data = training.get("data") if isinstance(training.get("data"), dict) else {}
    steps = training.get("step", training.get("steps"))
    validation = training.get("validation") if isinstance(training.get("validation"), dict) else {}
    last = ", ".join(
        f"{METRICS.get(k, (k, k))[1]} {_number(v)}" for k, v in validation.items() if k not in COUNTS
    )
    rows = [
        ("training / validation tokens", _pair(data.get("train_tokens"), data.get("validation_tokens"))),
        ("tokens seen", training.get("tokens_seen")),
        ("optimizer steps", _pair(steps, training.get("total_steps"), " of ")),
        ("wall time", _duration(training.get("wall_time_s"))),
        ("compute time (tokens seen / median tokens/s)", _duration(training.get("compute_time_s"))),
        ("median tokens/s", training.get("median_tokens_per_s")),
        ("hardware", training.get("hardware")),
        ("precision", training.get("precision")),
        ("last validation during training", last or None),
    ]
    lines += ["", "## Training", ""]
    if any(value is not None for _, value in rows):
        lines += ["| | |", "|---|---|"]
        lines += [f"| {k} | {_number(v) if v is not None else 'not recorded'} |" for k, v in rows]
    else:
        lines.append("Not recorded (no training.json).")
    if training.get("stopped"):
        lines += ["", f"The run was {training['stopped']}."]
    if training.get("command"):
        where = " (`CORPUS`: the folder of the works above)" if training.get("works") else ""
        lines += ["", f"Reproduce{where}:", "", "```", str(training["command"]), "```"]
    recipe = training.get("recipe")
    if recipe:
        text = recipe if isinstance(recipe, str) else json.dumps(recipe, indent=2, ensure_ascii=False)
        lines += ["", "<details><summary>Recipe</summary>", "", "```json", text, "```", "", "</details>"]
    return lines + [""]


def _works(works: Any) -> list[str]:
    """The documents trained and validated on, with title, author and Project Gutenberg number."""
    if not isinstance(works, list) or not works:
        return []
    lines = ["", "| work | author | Project Gutenberg | split |", "|---|---|---|---|"]
    for work in works:
        if isinstance(work, dict):
            number = str(work.get("gutenberg_id") or "")
            pg = f"[#{number}](https://www.gutenberg.org/ebooks/{number})" if number.isdigit() else "—"
            title = work.get("title") or f"`{work.get('file', '?')}`"
            lines.append(f"| {title} | {work.get('author') or '—'} | {pg} | {work.get('split', '?')} |")
    return lines


def _pair(first: Any, second: Any, joint: str = " / ") -> str | None:
    if first is None and second is None:
        return None
    return joint.join(_number(x) if x is not None else "?" for x in (first, second))


def _evaluation(evaluation: dict | None) -> list[str]:
    lines = ["## Evaluation", ""]
    metrics = evaluation.get("metrics") if isinstance(evaluation, dict) else None
    if not isinstance(metrics, dict) or not metrics:
        return lines + ["Not evaluated.", ""]
    baseline = evaluation.get("baseline") if isinstance(evaluation.get("baseline"), dict) else {}
    baseline_name = evaluation.get("baseline_name") or "n-gram baseline"
    corpus = evaluation.get("corpus") or "the validation split"
    lines += [f"On {corpus}, next to {baseline_name} over the same tokenizer:", ""]
    lines += [f"| metric | this model | {baseline_name} |", "|---|---|---|"]
    for name, value in metrics.items():
        if name in COUNTS:
            continue
        reference = baseline.get(name)
        readable = METRICS.get(name, (name, name.replace("_", " ")))[1]
        shown = _number(reference) if reference is not None else "—"
        lines.append(f"| {readable} | {_number(value)} | {shown} |")
    counted = [
        f"{_number(metrics[c])} {'masked tokens' if c == 'masked' else c}"
        for c in COUNTS
        if isinstance(metrics.get(c), int | float)
    ]
    if counted:
        lines += ["", f"Evaluated on {', '.join(counted)}."]
    return lines + [""]


def _samples(samples: Any) -> list[str]:
    """Fill-mask samples ({"input", "output"}) as a table; generations ({"prompt", "completion"}) as text
    blocks, prompt and continuation together, since a continuation spans lines."""
    if not isinstance(samples, list) or not samples:
        return []
    lines = ["## Sample outputs", ""]
    rows = [s for s in samples if isinstance(s, dict) and "input" in s]
    if rows:
        lines += ["| input | output |", "|---|---|"]
        lines += [f"| `{s['input']}` | {str(s.get('output', '')).replace('|', '∣')} |" for s in rows]
        lines.append("")
    fence = "`" * 3
    for sample in samples:
        if isinstance(sample, dict) and "prompt" in sample:
            text = f"{sample['prompt']}{sample.get('completion', '')}".replace(fence, "'" * 3)
            lines += [f"Prompt `{sample['prompt']}`:", "", fence + "text", text, fence, ""]
    return lines


def build_model_card(checkpoint: str | Path, repo_id: str | None = None) -> str:
    """The README.md (YAML front matter + Markdown) describing the checkpoint directory ``checkpoint``."""
    directory = Path(checkpoint)
    config = load_config(directory / "config.json")
    training = read_json(directory / "training.json") or {}
    if not isinstance(training, dict):
        raise ValueError("training.json must hold a JSON object")
    evaluation = read_json(directory / "evaluation.json")
    name = repo_id or directory.resolve().name
    metadata = _metadata(config, training, evaluation if isinstance(evaluation, dict) else None, name)
    summary = (
        f"A small {OBJECTIVES[config.kind]} written from scratch in PyTorch with "
        "atencion, trained on Spanish text, with "
        f"{describe_attention(config).split(';')[0]} attention."
    )
    reference = repo_id or "DIR"
    try_it = (
        f'atencion fill-mask {reference} "La niña lee un [MASK] en el jardín."'
        if config.kind == "encoder"
        else f'atencion generate {reference} "En un lugar de la Mancha" --max-new-tokens 40 --sample'
    )
    usage = [
        "## Use",
        "",
        *(
            []
            if repo_id
            else [
                "`DIR`: this folder (for a shipped model, its name will do; once pushed, its Hub name `ORG/NAME`).",
                "",
            ]
        ),
        "```",
        *([f"atencion pull {reference}"] if repo_id else []),
        try_it,
        f"atencion serve --{config.kind} {reference}",
        "```",
        "",
    ]
    body = [
        f"# {name}",
        "",
        summary,
        "",
        *_architecture(
            config,
            count_parameters(directory / "model.safetensors"),
            describe_tokenizer(directory / "tokenizer.json"),
        ),
        *_training(training),
        *_evaluation(evaluation if isinstance(evaluation, dict) else None),
        *_samples(read_json(directory / "samples.json")),
        *usage,
    ]
    return f"---\n{metadata.to_yaml()}\n---\n\n" + "\n".join(body)
