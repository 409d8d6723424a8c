"""The OpenAI wire format without a server: stop sequences, validation errors, the chat prompt, log-probs."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from service.openai_format import (
    CompletionLogprobs,
    OpenAIError,
    TextStream,
    chat_prompt,
    finish_reason,
    inline_refs,
    parse_body,
    top_dict,
)
from service.openai_schemas import ChatCompletionRequest, CompletionRequest


def stream(pieces: list[str], stops: list[str], lstrip: bool = False) -> tuple[list[str], str]:
    text = TextStream(stops, lstrip)
    sent = [text.add(p, final=i == len(pieces) - 1) for i, p in enumerate(pieces)]
    return sent, text.result


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
    sent, result = stream(pieces, stops)
    assert "".join(sent) == result == expected
    for stop in stops:
        assert stop not in "".join(sent)


def test_lstrip_drops_leading_whitespace_only():
    sent, result = stream([" ", "\n Hola", " ", "tú"], [], lstrip=True)
    assert result == "Hola tú" and "".join(sent) == result
    _, stopped = stream(["\nUsuario:", " más"], ["\nUsuario:"], lstrip=True)
    assert stopped == ""  # the stop is found in the text as generated, not in the stripped one


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
