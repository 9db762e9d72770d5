"""The HTTP gateway through the official `openai` package (pinned in .ci/requirements-ci.txt).

Usage: openai_client.py BASE_URL      (e.g. http://127.0.0.1:8080/v1)
Asks questions non-streaming and streaming on both endpoints, checks that OpenAI's
`usage` bills what Ponder's counted, that the streamed content is the final answer, and
that bad input is refused with a 400 naming the field; then leaves two queries midway
(a timeout, a closed stream) for the calling test to see them cancelled. Prints one line
per check; the calling test (tests/system/gateway.rs) asserts on them.
"""
import sys

import openai

QUESTION = "47+38"


def check_usage(usage, ponder_usage):
    # A bill from OpenAI's usage matches Ponder's Usage.
    assert usage.completion_tokens == ponder_usage["generator_tokens"], (usage, ponder_usage)
    assert usage.prompt_tokens == ponder_usage["prompt_tokens"] + ponder_usage["verifier_tokens"], (
        usage,
        ponder_usage,
    )
    assert usage.prompt_tokens > 0 and usage.completion_tokens > 0, usage
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens, usage


def refused(param, **kwargs):
    try:
        client.chat.completions.create(**kwargs)
    except openai.BadRequestError as e:
        assert e.status_code == 400, e
        assert e.body["param"] == param, (param, e.body)
        print(f"refused {param}: {e.body['message']}")
        return
    raise AssertionError(f"{param}: accepted")


base = sys.argv[1]
client = openai.OpenAI(base_url=base, api_key="not-needed-without-keys", max_retries=0)
user = [{"role": "user", "content": QUESTION}]

models = [m.id for m in client.models.list().data]
assert "default" in models, models
print("models " + " ".join(models))

r = client.chat.completions.create(
    model="default", messages=user, seed=7, extra_body={"ponder": {"budget": 8}}
)
ponder = r.to_dict()["ponder"]
assert r.choices[0].message.content == ponder["answer"], r
assert r.choices[0].finish_reason == "stop", r
assert r.model == ponder["model_id"] and r.model in models, r
assert ponder["usage"]["generations"] <= 8, ponder
check_usage(r.usage, ponder["usage"])
print(f"chat answer {r.choices[0].message.content} strategy {ponder['strategy']}")

r = client.completions.create(
    model=r.model, prompt=QUESTION, seed=7, max_tokens=20000, extra_body={"ponder": {"budget": 4}}
)
ponder = r.to_dict()["ponder"]
assert r.choices[0].text == ponder["answer"], r
check_usage(r.usage, ponder["usage"])
assert r.usage.completion_tokens <= 20000
print(f"completion answer {r.choices[0].text}")

stream = client.chat.completions.create(
    model="default",
    messages=user,
    seed=7,
    stream=True,
    stream_options={"include_usage": True},
    extra_body={"ponder": {"budget": 8, "strategy": "weighted_best_of_n"}},
)
content, final, progress, usage = "", None, 0, None
for chunk in stream:
    d = chunk.to_dict()
    if chunk.choices:
        content += chunk.choices[0].delta.content or ""
        if chunk.choices[0].finish_reason:
            final = d["ponder"]
        elif d.get("ponder"):
            progress += 1
    if chunk.usage:
        usage = chunk.usage
assert final is not None, "no final chunk"
assert content == final["answer"], (content, final)
check_usage(usage, final["usage"])
print(f"stream answer {content} progress events {progress}")

stream = client.completions.create(model="default", prompt=QUESTION, seed=7, stream=True)
text = "".join(c.choices[0].text for c in stream if c.choices)
print(f"completion stream answer {text}")

refused("n", model="default", messages=user, n=2)
refused("temperature", model="default", messages=user, temperature=0)
refused("tools", model="default", messages=user, tools=[{"type": "function", "function": {"name": "f"}}])
refused("model", model="gpt-4o", messages=user)
refused("ponder.budget", model="default", messages=user, extra_body={"ponder": {"budget": 10**6}})
refused("messages", model="default", messages=[{"role": "system", "content": "no question"}])

# A client that gives up cancels its query; so does one that closes a stream.
try:
    client.with_options(timeout=1.0).chat.completions.create(
        model="default", messages=user, extra_body={"ponder": {"budget": 1024, "strategy": "majority"}}
    )
    raise AssertionError("1024 generations answered within a second")
except openai.APITimeoutError:
    print("gave up on a unary request")
stream = client.chat.completions.create(
    model="default",
    messages=user,
    stream=True,
    extra_body={"ponder": {"budget": 1024, "strategy": "majority"}},
)
next(iter(stream))
stream.close()
print("closed a stream")
