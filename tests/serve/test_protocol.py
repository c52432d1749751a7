"""Request checking without a server: what a valid request becomes, and what each error names."""

import pytest

from reftlab.serve.protocol import ApiError, parse_request

MODELS = {"base": (), "a": ("a",), "b": ("b",), "c": ("c",)}
CHAT = {"model": "base", "messages": [{"role": "user", "content": "hi"}]}


def test_defaults_follow_openai_and_compositions_take_the_order_given():
    p = parse_request("chat", CHAT, MODELS)
    assert (p.route, p.temperature, p.top_p, p.max_tokens, p.stop, p.stream) == ((), 1.0, 1.0, None, (), False)
    assert parse_request("chat", {**CHAT, "model": "c", "reft": ["a"]}, MODELS).route == ("c", "a")
    assert parse_request("chat", {**CHAT, "reft": ["c", "a"]}, MODELS).route == ("c", "a")
    assert parse_request("chat", {**CHAT, "reft": ["a", "c"]}, MODELS).route == ("a", "c")
    assert parse_request("chat", {**CHAT, "model": "c", "reft": ["a", "c"]}, MODELS).route == ("a", "c")
    assert parse_request("chat", {**CHAT, "model": "b", "reft": "b"}, MODELS).route == ("b",)
    p = parse_request("completion", {"model": "a", "prompt": ["once"], "stop": "\n", "max_tokens": 3}, MODELS)
    assert (p.prompt, p.stop, p.max_tokens, p.route) == ("once", ("\n",), 3, ("a",))


def test_chat_messages_accept_text_parts_and_the_developer_role():
    body = {
        "model": "base",
        "messages": [
            {"role": "developer", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "hi "}, {"type": "text", "text": "there"}]},
        ],
        "max_completion_tokens": 4,
        "stream": True,
        "stream_options": {"include_usage": True},
        "n": 1,
        "logprobs": False,
        "user": "someone",
    }
    p = parse_request("chat", body, MODELS)
    assert p.messages == ({"role": "system", "content": "be brief"}, {"role": "user", "content": "hi there"})
    assert p.max_tokens == 4 and p.include_usage and p.stream


@pytest.mark.parametrize(
    "body,status,phrase",
    [
        ({**CHAT, "max_tokens": 3, "max_completion_tokens": 4}, 400, "disagree"),
        ({**CHAT, "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, 400, "only text parts"),
        ({**CHAT, "messages": []}, 400, "at least one message"),
        ({**CHAT, "seed": 1.5}, 400, "seed must be an integer"),
        ({**CHAT, "stop": [""]}, 400, "stop must be a non-empty string"),
        ({**CHAT, "temperature": True}, 400, "temperature must be a number"),
        ({**CHAT, "n": True}, 400, "n=True is not supported"),
        ({**CHAT, "reft": 3}, 400, "reft must be a ReFT name or a list"),
        ({**CHAT, "reft": ["a", "b", "a"]}, 400, "reft names ReFT 'a' twice"),
        ({**CHAT, "model": 7}, 400, "'model' must be a str"),
        ({**CHAT, "prompt": "x"}, 400, "Unrecognized request argument supplied: prompt"),
    ],
)
def test_each_error_names_the_field(body, status, phrase):
    with pytest.raises(ApiError) as e:
        parse_request("chat", body, MODELS)
    assert e.value.status == status and phrase in e.value.message
    assert e.value.body()["error"]["type"] == "invalid_request_error"
