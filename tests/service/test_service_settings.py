"""Settings: flags over ATENCION_* variables over defaults; every bad value names its flag and variable."""

import pytest

from service.settings import Limits, Settings, SettingsError, load_settings


def test_defaults_without_flags_or_environment():
    settings = load_settings({}, env={})
    assert settings == Settings()
    assert settings.host == "127.0.0.1" and settings.port == 8000 and settings.api_key is None


def test_environment_then_flags_win():
    env = {
        "ATENCION_ENCODERS": "org/uno@v1, ./dos ,",
        "ATENCION_DECODERS": "org/tres@abc",
        "ATENCION_PORT": "9000",
        "ATENCION_MAX_BATCH_SIZE": "32",
        "ATENCION_BATCH_TIMEOUT": "0.2",
        "ATENCION_MAX_NEW_TOKENS": "50",
        "ATENCION_MAX_PAYLOAD_BYTES": "4096",
    }
    settings = load_settings({"port": 9100, "encoders": None}, env=env)
    assert settings.encoders == ("org/uno@v1", "./dos") and settings.decoders == ("org/tres@abc",)
    assert settings.port == 9100 and settings.max_batch_size == 32 and settings.batch_timeout == 0.2
    assert settings.limits == Limits(max_new_tokens=50, max_payload_bytes=4096)
    flagged = load_settings({"encoders": ["x"], "decoders": ["y"]}, env=env)
    assert flagged.encoders == ("x",) and flagged.decoders == ("y",)


@pytest.mark.parametrize(
    ("flags", "env", "words"),
    [
        ({"port": 80}, {}, ("--port", "ATENCION_PORT")),
        ({"accelerator": "tpu"}, {}, ("--accelerator", "auto, cpu, cuda")),
        ({}, {"ATENCION_WORKERS_PER_DEVICE": "0"}, ("--workers-per-device",)),
        ({}, {"ATENCION_BATCH_TIMEOUT": "soon"}, ("ATENCION_BATCH_TIMEOUT", "float")),
        ({}, {"ATENCION_MAX_INPUT_TOKENS": "1"}, ("ATENCION_MAX_INPUT_TOKENS", ">= 2")),
        ({"api_key": "abc"}, {}, ("--api-key", "short")),
        ({}, {"ATENCION_QUANTIZE": "int4"}, ("--quantize", "ATENCION_QUANTIZE", "none, int8")),
        ({"decoding": "fast"}, {}, ("--decoding", "eager, compiled")),
    ],
)
def test_bad_values_name_the_flag_and_variable(flags, env, words):
    with pytest.raises(SettingsError) as caught:
        load_settings(flags, env=env)
    assert all(word in str(caught.value) for word in words)


def test_decoding_and_quantization_from_environment_or_flags():
    settings = load_settings({"decoding": "compiled"}, env={"ATENCION_QUANTIZE": "int8"})
    assert settings.decoding == "compiled" and settings.quantize == "int8"
