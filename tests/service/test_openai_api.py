"""The OpenAI-compatible routes, driven by the real ``openai`` client against the real server on 127.0.0.1."""

from __future__ import annotations

import json

import openai
import pytest
import requests

from modeling.checkpoint import load_checkpoint
from modeling.generation import Sampling, generate_text
from modeling.logprobs import prompt_logprobs
from service.openai_format import CHAT_STOPS, chat_prompt


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def decoder(tiny_checkpoints):
    return load_checkpoint(tiny_checkpoints / "decoder-dense")


def greedy(decoder, prompt: str, n: int, stop: tuple[str, ...] = ()) -> str:
    ids = decoder.tokenizer.encode(prompt).ids
    return generate_text(decoder.model, decoder.tokenizer, ids, Sampling(max_new_tokens=n, stop=stop))


def test_a_greedy_completion_is_the_checkpoints_own_continuation(client, decoder):
    prompt = "El gato duerme en"
    answer = client.completions.create(model="decoder-dense", prompt=prompt, max_tokens=8, temperature=0)
    choice = answer.choices[0]
    assert answer.object == "text_completion" and answer.model == "decoder-dense"
    assert choice.text == greedy(decoder, prompt, 8) and choice.index == 0
    assert choice.finish_reason in ("stop", "length") and choice.logprobs is None
    prompt_tokens = len(decoder.tokenizer.encode(prompt).ids)
    assert answer.usage.prompt_tokens == prompt_tokens
    assert 1 <= answer.usage.completion_tokens <= 8
    assert answer.usage.total_tokens == prompt_tokens + answer.usage.completion_tokens


def test_echo_gives_the_prompts_logprobs_of_a_full_forward(client, decoder):
    """What lm-evaluation-harness sends: token ids, echo, logprobs 1, max_tokens 1 (tolerance 1e-4)."""
    prompts = [
        decoder.tokenizer.encode(t).ids for t in ("La niña lee un libro", "El tren sale de la estación")
    ]
    answer = client.completions.create(
        model="decoder-dense", prompt=prompts, max_tokens=1, temperature=0, echo=True, logprobs=1
    )
    assert [c.index for c in answer.choices] == [0, 1]
    for ids, choice in zip(prompts, answer.choices, strict=True):
        logprobs = choice.logprobs
        assert len(logprobs.tokens) == len(ids) + 1  # the prompt, then the one generated token
        expected = prompt_logprobs(decoder.model, ids, 1)
        assert logprobs.token_logprobs[0] is None and logprobs.top_logprobs[0] is None
        for got, want in zip(logprobs.token_logprobs[1 : len(ids)], expected[1:], strict=True):
            assert abs(got - want.logprob) < 1e-4
        assert choice.text.startswith(decoder.tokenizer.decode(ids))
        assert logprobs.text_offset == sorted(logprobs.text_offset)
    assert answer.usage.prompt_tokens == sum(len(p) for p in prompts)


def test_echo_with_zero_tokens_scores_the_prompt_alone(client, decoder):
    ids = decoder.tokenizer.encode("Mi madre cocina una sopa").ids
    answer = client.completions.create(
        model="decoder-dense", prompt=ids, max_tokens=0, echo=True, logprobs=0, temperature=0
    )
    choice = answer.choices[0]
    assert len(choice.logprobs.tokens) == len(ids) and choice.finish_reason == "length"
    assert answer.usage.completion_tokens == 0


def test_logprobs_list_the_best_alternatives_and_greedy_tokens_are_the_best(client):
    answer = client.completions.create(
        model="decoder-dense", prompt="Mañana vamos", max_tokens=5, temperature=0, logprobs=3
    )
    logprobs = answer.choices[0].logprobs
    assert len(logprobs.tokens) == answer.usage.completion_tokens
    for token_logprob, top in zip(logprobs.token_logprobs, logprobs.top_logprobs, strict=True):
        assert 3 <= len(top) <= 4  # the 3 best, plus the chosen token when it is not among them
        assert token_logprob == max(top.values())  # greedy: the very same float as the best


def test_a_stream_carries_the_same_text_and_ends_with_usage_and_done(client, server):
    kwargs = dict(model="decoder-dense", prompt="Los niños juegan", max_tokens=10, temperature=0)
    whole = client.completions.create(**kwargs)
    chunks = list(client.completions.create(**kwargs, stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole.choices[0].text
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert all(c.usage is None for c in chunks[:-1])
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == whole.choices[0].finish_reason
    raw = requests.post(server.url + "/v1/completions", json={**kwargs, "stream": True}, timeout=60)
    assert raw.headers["content-type"].startswith("text/event-stream")
    events = [e for e in raw.text.split("\n\n") if e]
    assert events[-1] == "data: [DONE]" and all(e.startswith("data: ") for e in events)


def test_a_stop_sequence_ends_the_text_before_it(client, decoder):
    free = greedy(decoder, "El sol brilla", 12)
    stop = free[3:5]
    expected = free[: free.index(stop)]
    kwargs = dict(model="decoder-dense", prompt="El sol brilla", max_tokens=12, temperature=0, stop=[stop])
    answer = client.completions.create(**kwargs)
    assert answer.choices[0].text == expected and answer.choices[0].finish_reason == "stop"
    streamed = "".join(c.choices[0].text for c in client.completions.create(**kwargs, stream=True))
    assert streamed == expected  # not one character of the stop sequence leaks into the stream


def test_a_seed_repeats_a_sample_and_n_gives_indexed_choices(client):
    kwargs = dict(model="decoder-dense", prompt="Ella escribe", max_tokens=8, temperature=1.0, seed=11, n=3)
    first = client.completions.create(**kwargs)
    again = client.completions.create(**kwargs)
    assert [c.text for c in first.choices] == [c.text for c in again.choices]
    assert [c.index for c in first.choices] == [0, 1, 2]
    other = client.completions.create(**{**kwargs, "seed": 12, "n": 1})
    assert isinstance(other.choices[0].text, str)


def test_chat_answers_after_the_documented_prompt(client, decoder):
    messages = [
        {"role": "system", "content": "Responde breve."},
        {"role": "user", "content": "¿Dónde está el perro?"},
    ]
    answer = client.chat.completions.create(
        model="decoder-dense", messages=messages, max_tokens=6, temperature=0
    )
    prompt = chat_prompt([(m["role"], m["content"]) for m in messages])
    expected = greedy(decoder, prompt, 6, CHAT_STOPS).lstrip()
    for stop in CHAT_STOPS:
        expected = expected.split(stop)[0]
    choice = answer.choices[0]
    assert choice.message.role == "assistant" and choice.message.content == expected
    assert answer.object == "chat.completion" and choice.finish_reason in ("stop", "length")
    assert answer.usage.prompt_tokens == len(decoder.tokenizer.encode(prompt).ids)
    chunks = list(
        client.chat.completions.create(
            model="decoder-dense", messages=messages, max_tokens=6, temperature=0, stream=True,
            stream_options={"include_usage": True}, logprobs=True, top_logprobs=2,
        )
    )  # fmt: skip
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == expected
    entries = [
        e for c in chunks if c.choices and c.choices[0].logprobs for e in c.choices[0].logprobs.content
    ]
    assert len(entries) == chunks[-1].usage.completion_tokens
    assert all(len(e.top_logprobs) == 2 and e.logprob == e.top_logprobs[0].logprob for e in entries)


def test_models_lists_the_decoders_only(client):
    ids = [m.id for m in client.models.list().data]
    assert ids == ["decoder-dense", "decoder-sparse"]
    card = client.models.retrieve("decoder-sparse")
    assert card.id == "decoder-sparse" and card.max_model_len == 64 and "Usuario" in card.chat_format
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("encoder-dense")


def error_of(exc: openai.APIStatusError) -> dict:
    body = exc.response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


@pytest.mark.parametrize(
    ("kwargs", "status", "param"),
    [
        ({"model": "bert-grande"}, 404, "model"),
        ({"model": "encoder-dense"}, 404, "model"),
        ({"temperature": 3}, 400, "temperature"),
        ({"max_tokens": 10**6}, 400, "max_tokens"),
        ({"n": 0}, 400, "n"),
        ({"presence_penalty": 0.5}, 400, "presence_penalty"),
        ({"prompt": [1, 10**6]}, 400, "prompt"),
        ({"prompt": "El gato " * 60}, 400, "prompt"),
        ({"extra_body": {"temperatura": 0.5}}, 400, "temperatura"),
        ({"max_tokens": 0}, 400, "max_tokens"),
        ({"logprobs": 50}, 400, "logprobs"),
    ],
)
def test_bad_requests_get_openais_error_shape_naming_the_field(client, kwargs, status, param):
    request = {"model": "decoder-dense", "prompt": "Hola", "max_tokens": 2, **kwargs}
    with pytest.raises(openai.APIStatusError) as caught:
        client.completions.create(**request)
    assert caught.value.status_code == status
    error = error_of(caught.value)
    assert error["param"] == param and param in error["message"]
    assert error["type"] == ("not_found_error" if status == 404 else "invalid_request_error")


def test_chat_errors_name_the_field_too(client, server):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="decoder-dense", messages=[{"role": "robot", "content": "hola"}])
    assert error_of(caught.value)["param"] == "messages.0.role"
    for body, param in (
        ({"model": "decoder-dense", "messages": []}, "messages"),
        ({"model": "decoder-dense", "messages": [{"role": "user", "content": "x"}], "tools": [{}]}, "tools"),
        ({"messages": [{"role": "user", "content": "x"}]}, "model"),
    ):
        response = requests.post(server.url + "/v1/chat/completions", json=body, timeout=30)
        assert response.status_code == 400 and response.json()["error"]["param"] == param
    bad_json = requests.post(server.url + "/v1/completions", data=b"{not json", timeout=30)
    assert bad_json.status_code == 400 and bad_json.json()["error"]["code"] == "invalid_json"
    nowhere = requests.get(server.url + "/v1/nowhere", timeout=30)
    assert nowhere.status_code == 404 and set(nowhere.json()["error"]) == {"message", "type", "param", "code"}


def test_the_tokenizer_routes_speak_for_the_served_tokenizer(server, decoder):
    tokenizer = decoder.tokenizer
    info = server.get("/tokenizer_info").json()
    assert (info["bos_token"], info["eos_token"], info["model_max_length"]) == ("<s>", "</s>", 64)
    text = "El perro está en la calle."
    for special in (True, False):
        body = server.post("/tokenize", {"prompt": text, "add_special_tokens": special}).json()
        assert body["tokens"] == tokenizer.encode(text, add_special_tokens=special).ids
    ids = tokenizer.encode(text).ids
    assert server.post("/detokenize", {"tokens": ids}).json()["prompt"] == tokenizer.decode(ids, False)
    bad = server.post("/detokenize", {"tokens": [10**7]})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "tokens"
    unknown = server.get("/tokenizer_info", params={"model": "nada"})
    assert unknown.status_code == 404 and unknown.json()["error"]["param"] == "model"


def test_the_routes_are_documented_in_the_openapi_schema(server):
    paths = server.get("/openapi.json").json()["paths"]
    for path in ("/v1/completions", "/v1/chat/completions", "/tokenize", "/detokenize"):
        schema = paths[path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert "$ref" not in json.dumps(schema)  # inlined: valid without the model's $defs
        assert "400" in paths[path]["post"]["responses"]
    assert (
        "prompt"
        in paths["/v1/completions"]["post"]["requestBody"]["content"]["application/json"]["schema"][
            "properties"
        ]
    )
    assert "get" in paths["/v1/models"] and "get" in paths["/v1/models/{model_id}"]


def test_an_api_key_is_taken_as_openai_clients_send_it(start_server, tiny_checkpoints):
    key = "clave-secreta-larga"
    server = start_server("--decoder", str(tiny_checkpoints / "decoder-dense"), env={"ATENCION_API_KEY": key})
    request = dict(model="decoder-dense", prompt="Hola", max_tokens=2, temperature=0)
    good = openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0, timeout=60)
    assert good.completions.create(**request).choices[0].finish_reason in ("stop", "length")
    wrong = openai.OpenAI(base_url=server.url + "/v1", api_key="otra-clave-larga", max_retries=0, timeout=60)
    with pytest.raises(openai.AuthenticationError) as caught:
        wrong.chat.completions.create(model="decoder-dense", messages=[{"role": "user", "content": "hola"}])
    assert error_of(caught.value)["type"] == "authentication_error"
