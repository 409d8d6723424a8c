"""A careless or hostile repository: pull takes only checkpoint data, checks it, and refuses the rest.

These call ``resolve_model`` in this process with an explicit endpoint and cache, so no client setting read at
import matters.
"""

from __future__ import annotations

import json

import pytest
from hub_support import publish, write_checkpoint

from modeling.hub import HubError, resolve_model


def checkpoint_files(tmp_path, **changes: bytes) -> dict[str, bytes]:
    directory = write_checkpoint(tmp_path / "src", records=False)
    files = {p.name: p.read_bytes() for p in directory.iterdir()}
    return files | changes


def test_only_allow_listed_files_are_downloaded(hub, tmp_path):
    files = checkpoint_files(tmp_path, **{"pytorch_model.bin": b"pickle", "modeling_evil.py": b"import os"})
    commit = publish(hub, "evil/extra", files)
    model = resolve_model("evil/extra", cache_dir=tmp_path / "cache", endpoint=hub.url)
    assert model.commit == commit
    assert sorted(p.name for p in model.path.iterdir()) == [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
    ]
    assert not [r for r in hub.requests if "pytorch_model.bin" in r or "modeling_evil" in r]


def test_a_repository_without_a_checkpoint_is_refused_before_downloading(hub, tmp_path):
    publish(hub, "evil/pickle", {"config.json": b"{}", "pytorch_model.bin": b"pickle"})
    with pytest.raises(
        HubError, match="not an atencion checkpoint: missing model.safetensors, tokenizer.json"
    ):
        resolve_model("evil/pickle", cache_dir=tmp_path / "cache", endpoint=hub.url)
    assert not [r for r in hub.requests if "/resolve/" in r]


def test_a_config_with_unknown_keys_is_refused(hub, tmp_path):
    files = checkpoint_files(tmp_path)
    config = json.loads(files["config.json"]) | {"auto_map": {"AutoModel": "modeling_evil.Model"}}
    publish(hub, "evil/config", files | {"config.json": json.dumps(config).encode()})
    with pytest.raises(HubError, match="config.json is refused: auto_map"):
        resolve_model("evil/config", cache_dir=tmp_path / "cache", endpoint=hub.url)


def test_an_oversized_file_is_refused_before_downloading(hub, tmp_path, monkeypatch):
    publish(hub, "big/model", checkpoint_files(tmp_path))
    monkeypatch.setenv("ATENCION_HUB_MAX_BYTES", "1000")
    with pytest.raises(HubError, match=r"model.safetensors is [\d,]+ bytes, above the 1,000-byte limit"):
        resolve_model("big/model", cache_dir=tmp_path / "cache", endpoint=hub.url)
    assert not [r for r in hub.requests if "/resolve/" in r]
