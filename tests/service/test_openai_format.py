"""The OpenAI wire format without a server: stop sequences (the engine's, under OpenAI's rule), validation errors,
the chat prompt, log-probs."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from modeling.config import DecoderConfig
from modeling.generation import Sampling, TokenText
from service.openai_format import (
    CompletionLogprobs,
    OpenAIError,
    chat_prompt,
    finish_reason,
    inline_refs,
    parse_body,
    top_dict,
)
from service.openai_schemas import ChatCompletionRequest, CompletionRequest


def openai_text(pieces: list[str], stops: list[str]) -> tuple[list[str], str | None]:
    """What the engine's ``TokenText`` releases after each piece under OpenAI's stop rule (the text ends just
    before the stop), with a tokenizer whose tokens are exactly ``pieces``; and the last finish reason."""
    vocab = {"<pad>": 0, "</s>": 1, **{p: i + 2 for i, p in enumerate(dict.fromkeys(pieces))}}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tokenizer.decoder = decoders.Fuse()
    config = DecoderConfig(vocab_size=len(vocab), d_model=8, n_layers=1, n_heads=1, d_ff=8, eos_token_id=1)
    sampling = Sampling(stop=tuple(stops), stop_in_text=False)
    text = TokenText(tokenizer, [0], sampling, config, budget=len(pieces))
    sent, finish = [], None
    for piece in pieces:
        if text.done:  # the engine stops feeding a finished sequence
            break
        released = text.accept(vocab[piece], -1.0)
        sent.append("".join(t.text for t in released))
        finish = released[-1].finish_reason if released else finish
    return sent, finish


@pytest.mark.parametrize(
    ("pieces", "stops", "expected"),
    [
        (["Hola", " mun", "do"], [], "Hola mundo"),
        (["Hola", "\n", "\nAdiós"], ["\n\n"], "Hola"),  # the stop split across two pieces
        (["ab", "cSTO", "P", "xyz"], ["STOP"], "abc"),
        (["ab", "cST", "x"], ["STOP"], "abcSTx"),  # a false start is released once it cannot be a stop
        (["uno", " dos", " tres"], ["dos", "uno dos"], ""),  # the earliest stop wins
        (["x", "FIN"], ["FIN", "IN"], "x"),
    ],
)
def test_a_stop_sequence_never_leaks_into_the_stream(pieces, stops, expected):
    sent, finish = openai_text(pieces, stops)
    assert "".join(sent) == expected
    assert finish == ("stop_sequence" if stops and expected != "abcSTx" else "length")
    for i in range(len(sent)):  # at no moment has part of a stop gone out beyond the final text
        assert expected.startswith("".join(sent[: i + 1]))


def test_validation_errors_name_the_field():
    with pytest.raises(OpenAIError) as caught:
        parse_body(b'{"model": "m", "prompt": "x", "top_p": 0}', CompletionRequest)
    assert (caught.value.status, caught.value.param) == (400, "top_p")
    with pytest.raises(OpenAIError) as caught:
        parse_body(b'{"model": "m", "prompt": "x", "frequency_penalty": 1}', CompletionRequest)
    assert caught.value.param == "frequency_penalty" and caught.value.code == "unsupported"
    with pytest.raises(OpenAIError) as caught:
        parse_body(
            b'{"model": "m", "prompt": "x", "stream_options": {"include_usage": true}}', CompletionRequest
        )
    assert caught.value.param == "stream_options"
    with pytest.raises(OpenAIError) as caught:
        parse_body(b'{"model": "m", "prompt": ["a", 1]}', CompletionRequest)
    assert caught.value.param == "prompt"
    for field, value in (
        ("stream", "1"),
        ("temperature", '"0.5"'),
        ("max_tokens", "2.0"),
        ("echo", '"true"'),
    ):
        with pytest.raises(OpenAIError) as caught:  # strict types, as OpenAI: "0.5" is not a number
            parse_body(f'{{"model": "m", "prompt": "x", "{field}": {value}}}'.encode(), CompletionRequest)
        assert caught.value.param == field
    with pytest.raises(OpenAIError) as caught:
        parse_body(b"[1, 2]", CompletionRequest)
    assert caught.value.code == "invalid_json"
    with pytest.raises(OpenAIError) as caught:
        parse_body(b'{"model": "m", "messages": [{"role": "user"}], "logprobs": false, "top_logprobs": 2}',
                   ChatCompletionRequest)  # fmt: skip
    assert caught.value.param == "top_logprobs"
    body = caught.value.body()["error"]
    assert body["type"] == "invalid_request_error" and set(body) == {"message", "type", "param", "code"}


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [("hola", ["hola"]), (["a", "b"], ["a", "b"]), ([1, 2, 3], [[1, 2, 3]]), ([[1], [2, 3]], [[1], [2, 3]])],
)
def test_every_prompt_form_becomes_a_list_of_prompts(prompt, expected):
    assert CompletionRequest(model="m", prompt=prompt).prompts() == expected


def test_the_chat_prompt_is_the_documented_one():
    prompt = chat_prompt([("system", "Sé breve."), ("user", "¿Qué hora es?"), ("assistant", "Las ocho."),
                          ("user", "Gracias")])  # fmt: skip
    assert (
        prompt
        == "Sistema: Sé breve.\nUsuario: ¿Qué hora es?\nAsistente: Las ocho.\nUsuario: Gracias\nAsistente:"
    )


def byte_level() -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=256, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(["abc"], trainer)  # the 256 bytes, no merges
    return tokenizer


def test_partial_characters_keep_distinct_token_strings():
    tokenizer = byte_level()
    ids = tokenizer.encode("ñ").ids  # two bytes, two tokens, neither valid UTF-8 alone
    assert len(ids) == 2
    entries = top_dict(tokenizer, [(ids[0], -0.5), (ids[1], -1.0)], None)
    assert len(entries) == 2 and "\ufffd" not in "".join(entries)
    assert top_dict(tokenizer, [(ids[0], -0.5)], (ids[0], -0.7)) == {next(iter(entries)): -0.5}
    logprobs = CompletionLogprobs(tokenizer, 1)
    logprobs.add(ids[0], None, [], 0)
    logprobs.add(ids[1], -0.25, [(ids[0], -0.1)], 0)
    taken = logprobs.take()
    assert taken["token_logprobs"] == [None, -0.25] and taken["top_logprobs"][0] is None
    assert len(taken["top_logprobs"][1]) == 2 and logprobs.take()["tokens"] == []


def test_finish_reasons_and_inlined_schemas():
    assert [finish_reason(r) for r in ("length", "eos_token", "stop_sequence", None)] == [
        "length",
        "stop",
        "stop",
        None,
    ]
    schema = inline_refs(ChatCompletionRequest.model_json_schema())
    assert "$ref" not in str(schema) and "$defs" not in schema
    assert "role" in str(schema["properties"]["messages"])
