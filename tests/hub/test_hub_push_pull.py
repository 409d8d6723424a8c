"""`atencion push` / `atencion pull` with the real huggingface_hub client against the test Hub server."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml
from hub_support import TOKEN, digests, write_checkpoint
from huggingface_hub import HfApi

from modeling.hub import HubError, resolve_model

SHA = re.compile(r"[0-9a-f]{40}")


def push(atencion, path: Path, repo: str, *extra: str) -> str:
    result = atencion("push", str(path), repo, *extra)
    assert result.returncode == 0, result.stderr
    assert SHA.fullmatch(result.stdout.strip()), f"push must print only the commit sha, got {result.stdout!r}"
    return result.stdout.strip()


def pull(atencion, reference: str, **kwargs) -> tuple[Path, str]:
    result = atencion("pull", reference, **kwargs)
    assert result.returncode == 0, result.stderr
    path, commit = result.lines
    return Path(path), commit


def test_round_trip_keeps_every_file_and_reports_the_pushed_commit(atencion, hub, checkpoint):
    commit = push(atencion, checkpoint, "org/tiny-encoder")
    path, pulled = pull(atencion, "org/tiny-encoder")
    assert pulled == commit
    assert path.name == commit and "models--org--tiny-encoder" in str(path)
    got, sent = digests(path), digests(checkpoint)
    assert {name: got[name] for name in sent} == sent  # every checkpoint file, byte for byte
    assert set(got) == set(sent) | {
        "README.md"
    }  # plus the generated card, nothing else (.gitattributes stays)
    card = (path / "README.md").read_text(encoding="utf-8")
    meta = yaml.safe_load(card.split("---")[1])
    assert (
        meta["library_name"] == "atencion"
        and meta["pipeline_tag"] == "fill-mask"
        and meta["language"] == "es"
    )
    metrics = meta["model-index"][0]["results"][0]["metrics"]
    assert metrics == [{"type": "top1_accuracy", "value": 0.25, "name": "top1 accuracy"}]
    assert hub.authorized_writes > 0  # the token from HF_TOKEN reached the server


def test_pull_pinned_revisions_older_commit_branch_and_tag(atencion, hub, hf_home, tmp_path):
    first = push(atencion, write_checkpoint(tmp_path / "v1", seed=1), "org/m")
    second = push(atencion, write_checkpoint(tmp_path / "v2", seed=2), "org/m")
    branch = push(atencion, write_checkpoint(tmp_path / "v3", seed=3), "org/m", "--revision", "exp")
    assert len({first, second, branch}) == 3
    HfApi(endpoint=hub.url, token=TOKEN).create_tag("org/m", tag="v1.0", revision=first)  # the real client

    for reference, commit, source in [
        (f"org/m@{first}", first, "v1"),
        ("org/m", second, "v2"),
        ("org/m@exp", branch, "v3"),
        ("org/m@v1.0", first, "v1"),
    ]:
        path, pulled = pull(atencion, reference)
        assert pulled == commit, reference
        weights = digests(path)["model.safetensors"]
        assert weights == digests(tmp_path / source)["model.safetensors"], reference

    # Each branch and tag was recorded in the cache: offline, they resolve to the same commits.
    for revision, commit in (("main", second), ("exp", branch), ("v1.0", first)):
        assert resolve_model(f"org/m@{revision}", cache_dir=hf_home / "hub", offline=True).commit == commit
        # Pushing the same checkpoint again changes nothing: no new commit, the sha printed is the branch head.
    assert push(atencion, tmp_path / "v3", "org/m", "--revision", "exp") == branch


def test_offline_from_the_cache_after_the_server_stopped(atencion, hub, checkpoint, hf_home):
    commit = push(atencion, checkpoint, "org/off")
    online_path, _ = pull(atencion, "org/off@main")
    pull(atencion, f"org/off@{commit}")
    hub.stop()

    for reference in ("org/off", f"org/off@{commit}"):
        path, pulled = pull(atencion, reference, env={"HF_HUB_OFFLINE": "1"})
        assert (path, pulled) == (online_path, commit)
    # Online mode with the Hub gone: a cached branch is served from the cache, quickly.
    result = atencion("pull", "org/off", timeout=30)
    assert result.returncode == 0 and result.lines == [str(online_path), commit], result.stderr
    assert result.seconds < 10
    # The library call the service uses, in this process: offline, explicit cache.
    model = resolve_model("org/off@main", cache_dir=hf_home / "hub", offline=True)
    assert (model.path, model.commit, model.revision) == (online_path, commit, "main")
    assert model.sha256 == {k: v for k, v in digests(online_path).items()}


def tamper(path: Path) -> None:
    """Flip one byte of the cache's blob behind the snapshot link ``path``."""
    blob = path.resolve()
    data = bytearray(blob.read_bytes())
    data[-2] ^= 0xFF
    blob.write_bytes(bytes(data))


def test_a_tampered_cached_file_fails_verification(atencion, checkpoint, hf_home):
    commit = push(atencion, checkpoint, "org/t")
    path, _ = pull(atencion, "org/t")
    tamper(path / "model.safetensors")  # an LFS file: checked against its sha256 oid
    for env in ({}, {"HF_HUB_OFFLINE": "1"}):
        result = atencion("pull", f"org/t@{commit}", env=env)
        assert result.returncode == 1 and result.stdout == ""
        assert "model.safetensors failed verification" in result.stderr and "Traceback" not in result.stderr
    repaired = atencion("pull", f"org/t@{commit}", "--force")  # downloads again over the bad blob
    assert repaired.returncode == 0 and repaired.lines == [str(path), commit], repaired.stderr
    assert digests(path) == digests(checkpoint) | {"README.md": digests(path)["README.md"]}
    tamper(path / "config.json")  # a regular file: checked against its git blob sha1
    with pytest.raises(HubError, match="config.json failed verification"):
        resolve_model(f"org/t@{commit}", cache_dir=hf_home / "hub", offline=True)


def test_the_token_never_appears_in_output_or_logs(atencion, hub, checkpoint, tmp_path):
    noisy = {"HF_HUB_VERBOSITY": "debug", "HF_DEBUG": "1", "HF_HUB_DISABLE_PROGRESS_BARS": None}
    pushed = atencion("push", str(checkpoint), "org/secret", "--private", env=noisy)
    pulled = atencion("pull", "org/secret", env=noisy)
    assert pushed.returncode == 0 and pulled.returncode == 0, pushed.stderr + pulled.stderr
    assert hub.authorized_writes > 0
    for result in (pushed, pulled):
        assert TOKEN not in result.stdout + result.stderr
    assert "DEBUG" in pushed.stderr or "curl" in pushed.stderr  # the logs were really on
    assert not any(TOKEN in request for request in hub.requests)  # never in a URL (the server's log)

    # A refused token: a clear line, still without the token.
    refused = atencion("push", str(checkpoint), "org/secret", env={"HF_TOKEN": TOKEN + "x"})
    assert refused.returncode == 1 and "refused the credentials" in refused.stderr
    assert TOKEN not in refused.stdout + refused.stderr and "Traceback" not in refused.stderr
    # The private repository is invisible without a token, readable with it.
    anonymous = atencion("pull", "org/secret", env={"HF_TOKEN": None, "HF_HOME": str(tmp_path / "other")})
    assert anonymous.returncode == 1 and "not found" in anonymous.stderr


def test_push_uploads_only_checkpoint_files(atencion, hub, checkpoint, tmp_path):
    (checkpoint / "optimizer.pt").write_bytes(b"pickle would run code")
    (checkpoint / "state").mkdir()
    (checkpoint / "state" / "rng.safetensors").write_bytes(b"x")
    push(atencion, checkpoint, "org/clean")
    _, files = hub.store.files("org/clean", "main")
    assert set(files) == {".gitattributes", "config.json", "model.safetensors", "tokenizer.json"} | {
        "README.md",
        "training.json",
        "evaluation.json",
    }
    # A file the new checkpoint no longer has is removed from the branch, so the revision is this checkpoint.
    (checkpoint / "evaluation.json").unlink()
    push(atencion, checkpoint, "org/clean")
    _, files = hub.store.files("org/clean", "main")
    assert "evaluation.json" not in files
    path, _ = pull(atencion, "org/clean")
    assert "Not evaluated." in (path / "README.md").read_text(encoding="utf-8")
    shutil.rmtree(checkpoint / "state")


def test_a_real_tiny_checkpoint_loads_after_the_round_trip(atencion, tiny_checkpoints):
    import torch

    from modeling.checkpoint import load_checkpoint

    source = tiny_checkpoints / "encoder-sparse"
    commit = push(atencion, source, "org/real")
    path, pulled = pull(atencion, f"org/real@{commit}")
    assert pulled == commit
    original, loaded = load_checkpoint(source), load_checkpoint(path)
    assert loaded.config == original.config
    for (name, a), (_, b) in zip(
        original.model.state_dict().items(), loaded.model.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
