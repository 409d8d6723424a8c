"""lm-evaluation-harness's ``local-completions`` model scores a local Spanish cloze task against the real server.

The documented command, run as a user would (``lm_eval`` on PATH), offline: the task's files are written here,
the harness finds the server's tokenizer through ``/tokenizer_info`` and ``/tokenize``, and any attempt to
reach the internet goes to a dead proxy. Its per-choice log-likelihoods and its accuracy must equal those
computed directly from the checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

from modeling.checkpoint import load_checkpoint
from modeling.logprobs import prompt_logprobs

DOCS = [
    ("El gato duerme en la", ["casa", "mar", "pan"], 0),
    ("La niña lee un libro en el", ["jardín", "tren", "sol"], 0),
    ("Mi madre cocina una sopa muy", ["rica", "azul", "pequeña"], 0),
    ("El tren sale de la estación a las", ["ocho", "casa", "playa"], 0),
    ("Los niños juegan en el", ["parque", "libro", "pan"], 1),
    ("El señor compra pan y leche en la", ["tienda", "calle", "carta"], 2),
    ("Nosotros vivimos en una ciudad", ["pequeña", "rica", "azul"], 1),
    ("El sol brilla y el cielo está", ["azul", "libro", "mar"], 2),
]

TASK = """task: cloze_es
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{context}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{label}}}}"
metric_list:
  - metric: acc
"""


def direct(checkpoint, context: str, continuation: str) -> tuple[float, bool]:
    """What the harness computes, from the model itself: the continuation's summed log-probability after the
    context (both tokenized without special tokens, the whole text split where the context ends) and whether
    every continuation token is the argmax."""
    encode = lambda text: checkpoint.tokenizer.encode(text, add_special_tokens=False).ids  # noqa: E731
    whole, ctx = encode(context + continuation), encode(context)
    scored = prompt_logprobs(checkpoint.model, whole, 1)[len(ctx) :]
    return sum(s.logprob for s in scored), all(s.top[0][0] == s.id for s in scored)


def test_lm_eval_local_completions_scores_a_cloze_task_like_the_model(server, tiny_checkpoints, tmp_path):
    data = tmp_path / "cloze.jsonl"
    data.write_text(
        "".join(
            json.dumps({"context": c, "choices": o, "label": l}, ensure_ascii=False) + "\n"
            for c, o, l in DOCS
        )
    )
    (tmp_path / "cloze_es.yaml").write_text(TASK.format(data=data))
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf"),
        "HTTP_PROXY": "http://127.0.0.1:9",  # nothing but the server on 127.0.0.1 is reachable
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "NO_PROXY": "127.0.0.1,localhost",
    }
    args = f"model=decoder-dense,base_url={server.url}/v1/completions,max_length=64,max_retries=1"
    command = [
        shutil.which("lm_eval") or sys.executable, "--model", "local-completions", "--model_args", args,
        "--tasks", "cloze_es", "--include_path", str(tmp_path), "--output_path", str(tmp_path / "out"),
        "--log_samples",
    ]  # fmt: skip
    assert shutil.which("lm_eval"), "lm-eval is in the test extra: pip install -e '.[test]'"
    run = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "remote tokenizer" in run.stderr  # found the server's tokenizer routes, no tokenizer files needed

    checkpoint = load_checkpoint(tiny_checkpoints / "decoder-dense")
    samples = [
        json.loads(line) for f in (tmp_path / "out").rglob("samples_cloze_es_*.jsonl") for line in open(f)
    ]
    assert len(samples) == len(DOCS)
    correct = 0
    for sample in sorted(samples, key=lambda s: s["doc_id"]):
        context, options, label = DOCS[sample["doc_id"]]
        expected = [direct(checkpoint, context, " " + option) for option in options]
        for (got_logprob, got_greedy), (logprob, greedy) in zip(
            sample["filtered_resps"], expected, strict=True
        ):
            assert abs(float(got_logprob) - logprob) < 1e-4  # fp32, cached vs. one forward: summation order
            assert (got_greedy == "True") == greedy
        correct += max(range(len(options)), key=lambda i: expected[i][0]) == label
    results = json.loads(next((tmp_path / "out").rglob("results_*.json")).read_text())["results"]["cloze_es"]
    assert results["acc,none"] == correct / len(DOCS)
