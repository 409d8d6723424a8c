"""Every failure of push / pull is one clear line on stderr, a non-zero exit, no traceback — and quick."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
from hub_support import Result, publish, write_checkpoint

from atencion.cli import main

QUICK_S = 10  # an error must not hide behind the client's retry loop (~24 s per file when unreachable)


def assert_clear_failure(result, *needles: str) -> None:
    assert result.returncode != 0
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr  # one line, no traceback, no client noise
    assert lines[0].startswith("atencion ") and "error:" in lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert result.seconds < QUICK_S, f"took {result.seconds:.1f} s"


@pytest.fixture
def silent_endpoint() -> Iterator[str]:
    """A port that accepts connections but never answers a request (a hung Hub or a black-holing proxy)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    listener.close()


@pytest.fixture
def pushed(hub, checkpoint) -> str:
    """org/there holding ``checkpoint``, committed straight into the server's store (no client run needed)."""
    return publish(hub, "org/there", {p.name: p.read_bytes() for p in checkpoint.iterdir()})


def test_missing_repository(atencion):
    assert_clear_failure(atencion("pull", "org/nowhere"), "org/nowhere", "not found")


def test_missing_revision_branch_and_sha(atencion, pushed):
    assert_clear_failure(atencion("pull", "org/there@nobranch"), "revision 'nobranch' not found", "org/there")
    missing = "0" * 40
    assert_clear_failure(atencion("pull", f"org/there@{missing}"), f"revision '{missing}' not found")


def test_unreachable_hub_fails_fast(atencion, unreachable_endpoint, checkpoint):
    env = {"HF_ENDPOINT": unreachable_endpoint}
    for args in (
        ("pull", "org/there"),
        ("pull", f"org/there@{'a' * 40}"),
        ("push", str(checkpoint), "org/x"),
    ):
        assert_clear_failure(atencion(*args, env=env), "cannot reach the Hub", unreachable_endpoint)


def test_a_hub_that_never_answers_is_bounded_by_the_timeout(atencion, silent_endpoint, checkpoint):
    env = {"HF_ENDPOINT": silent_endpoint, "ATENCION_HUB_TIMEOUT": "1"}
    assert_clear_failure(atencion("pull", "org/there", env=env), "cannot reach the Hub", "Timeout")
    assert_clear_failure(atencion("push", str(checkpoint), "org/x", env=env), "cannot reach the Hub")


def test_offline_without_the_files_in_the_cache(atencion, pushed):
    result = atencion("pull", "org/there", env={"HF_HUB_OFFLINE": "1"})
    assert_clear_failure(result, "not in the local cache", "offline")
    assert_clear_failure(atencion("pull", f"org/there@{pushed}", "--offline"), "not in the local cache")


# These fail before any Hub call, so they run in this process (the client's import-time settings don't matter).
@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("pull", "no slash"), "is not a Hub reference"),
        (("pull", "org/name@a@b"), "is not a Hub reference"),
        (("pull", "org/name@../../etc"), "is not a valid revision"),
        (("push", "/does/not/exist", "org/name"), "not a checkpoint directory"),
        (("push", "CHECKPOINT", "no-namespace"), "not a repository id of the form ORG/NAME"),
        (("push", "CHECKPOINT", "org/name", "--revision", "../up"), "not a valid branch name"),
        (("push", "CHECKPOINT", "org/name", "--revision", "a" * 40), "is a commit sha"),
        (("push", "BROKEN", "org/name"), "n_heads"),
        (("push", "INCOMPLETE", "org/name"), "missing tokenizer.json"),
    ],
)
def test_bad_arguments(capsys, hub, tmp_path, args, needle):
    broken = write_checkpoint(tmp_path / "broken", records=False)
    (broken / "config.json").write_text('{"kind": "encoder", "d_model": 30, "n_heads": 4}')
    incomplete = write_checkpoint(tmp_path / "incomplete", records=False)
    (incomplete / "tokenizer.json").unlink()
    paths = {"CHECKPOINT": write_checkpoint(tmp_path / "ok"), "BROKEN": broken, "INCOMPLETE": incomplete}
    start = time.monotonic()
    with pytest.raises(SystemExit) as exit_:
        main([str(paths.get(a, a)) for a in args])
    out, err = capsys.readouterr()
    assert_clear_failure(Result(exit_.value.code, out, err, time.monotonic() - start), needle)
    assert hub.requests == []  # refused before anything was sent
