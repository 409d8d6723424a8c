"""`atencion fill-mask --json` prints exactly what ``POST /fill-mask`` answers for the same model and text."""

from __future__ import annotations

import json

import pytest

from atencion.cli import main


@pytest.mark.parametrize("text", ["La niña lee un [MASK] en el jardín.", "El [MASK] come [MASK]."])
def test_the_cli_and_the_service_agree(server, tiny_checkpoints, capsys, text) -> None:
    served = server.post("/fill-mask", {"inputs": text, "parameters": {"top_k": 4}})
    assert served.status_code == 200, served.text
    with pytest.raises(SystemExit) as done:
        main(["fill-mask", str(tiny_checkpoints / "encoder-dense"), text, "--top-k", "4", "--json"])
    assert done.value.code == 0
    printed = json.loads(capsys.readouterr().out)
    served, printed = served.json(), printed
    if isinstance(served[0], dict):  # one mask: one flat list on both sides
        served, printed = [served], [printed]
    assert len(served) == len(printed)
    for theirs, ours in zip(served, printed, strict=True):
        assert [(c["token"], c["token_str"], c["sequence"]) for c in ours] == [
            (c["token"], c["token_str"], c["sequence"]) for c in theirs
        ]
        # tolerance: float32 noise between the service's padded batch and the CLI's single forward
        assert [c["score"] for c in ours] == pytest.approx([c["score"] for c in theirs], abs=1e-5)
