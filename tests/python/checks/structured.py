"""Suite `structured` (tests/tests/server.rs): JSON schema, json_object, regex and Lark constraints
(on both engines)."""

from checks.common import *  # noqa: F401,F403


CITY_FORMAT = {"type": "json_schema", "json_schema": {"name": "city", "schema": CITY_SCHEMA, "strict": True}}


@check("structured")
def sampled_answers_always_follow_the_json_schema():
    import jsonschema
    c = client()

    def one(seed):
        r = c.chat.completions.create(model=args.model, messages=CITY_PROMPT, temperature=1.0, seed=seed,
                                      max_tokens=300, response_format=CITY_FORMAT)
        return r.choices[0]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        choices = list(pool.map(one, range(20)))
    for choice in choices:
        assert choice.finish_reason == "stop", choice
        jsonschema.validate(json.loads(choice.message.content), CITY_SCHEMA)
    assert len({ch.message.content for ch in choices}) > 1, "20 samples at temperature 1 were all equal"
    # Streamed, the deltas put together are a valid answer too.
    chunks, text = stream_text(c, temperature=1.0, seed=99, max_tokens=300, response_format=CITY_FORMAT)
    jsonschema.validate(json.loads(text), CITY_SCHEMA)


@check("structured")
def json_object_regex_and_lark_constrain_the_text():
    c = client()
    r = c.chat.completions.create(model=args.model, messages=MESSAGES, temperature=0.7, seed=3, max_tokens=120,
                                  response_format={"type": "json_object"})
    text = r.choices[0].message.content
    assert text.startswith("{"), text
    if r.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(text), dict), text
    r = c.chat.completions.create(model=args.model, messages=MESSAGES, temperature=1.0, seed=4, max_tokens=20,
                                  extra_body={"response_format": {"type": "regex", "regex": "[0-9]{3}-[0-9]{4}"}})
    import re
    assert re.fullmatch("[0-9]{3}-[0-9]{4}", r.choices[0].message.content), r.choices[0].message.content
    lark = 'start: answer "."\nanswer: "yes" | "no"'
    r = c.chat.completions.create(model=args.model, messages=MESSAGES, max_tokens=10,
                                  extra_body={"response_format": {"type": "lark", "lark": lark}})
    assert r.choices[0].message.content in ("yes.", "no."), r.choices[0].message.content
    # Legacy completions honour it too.
    r = c.completions.create(model=args.model, prompt="The year is", max_tokens=10, temperature=0,
                             extra_body={"response_format": {"type": "regex", "regex": " [0-9]{4}"}})
    assert re.fullmatch(" [0-9]{4}", r.choices[0].text), r.choices[0].text


@check("structured")
def constraints_that_cannot_be_honoured_are_400s():
    def chat(response_format):
        return raw("POST", "/v1/chat/completions",
                   json={"model": args.model, "messages": MESSAGES, "response_format": response_format})

    def schema(s, **kw):
        return {"type": "json_schema", "json_schema": {"name": "x", "schema": s, **kw}}

    assert_error(chat(schema({"type": "nope"})), 400, param="response_format")
    assert_error(chat(schema({"type": "object", "if": {"type": "object"}})), 400, param="response_format",
                 contains="if")
    assert_error(chat({"type": "regex", "regex": "[0-9"}), 400, param="response_format")
    assert_error(chat({"type": "json_schema", "json_schema": {"schema": {}}}), 400)
    assert_error(chat(schema({}, shema={})), 400, param="response_format", contains="shema")
    assert_error(chat({"type": "xml"}), 400)
