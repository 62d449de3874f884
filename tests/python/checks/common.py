"""What several suites share: the run's `args`, the `check` registry, the clients and raw HTTP,
error-shape assertions, and the prompts and schemas more than one suite sends."""

import argparse
import concurrent.futures
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import traceback

import httpx
import openai


FRANCE = "What is the capital of France?"
SYSTEM = "Answer in one short sentence."
MESSAGES = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": FRANCE}]


# The run's arguments, filled in by run_checks.py before a suite runs.
args = argparse.Namespace()
CHECKS = []


def check(suite):
    def register(fn):
        CHECKS.append((suite, fn))
        return fn

    return register


def client(**kw):
    return openai.OpenAI(base_url=args.base_url + "/v1", api_key=args.api_key or "none", max_retries=0, **kw)


def raw(method, path, **kw):
    headers = kw.pop("headers", {})
    if args.api_key:
        headers.setdefault("Authorization", f"Bearer {args.api_key}")
    return httpx.request(method, args.base_url + path, headers=headers, timeout=60, **kw)


def assert_error(resp, status, param=None, contains=None):
    assert resp.status_code == status, (resp.status_code, resp.text)
    body = resp.json()
    err = body["error"]
    assert set(err) >= {"message", "type", "param", "code"}, body
    assert isinstance(err["message"], str) and err["message"], body
    if param is not None:
        assert err["param"] == param, body
    if contains is not None:
        assert contains in err["message"], body


def stream_text(c, model=None, **kw):
    chunks = list(c.chat.completions.create(model=model or args.model, messages=MESSAGES, stream=True, **kw))
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    return chunks, text


def metric(name):
    """The value of one sample of GET /metrics, or None."""
    text = raw("GET", "/metrics").text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return None


CITY_SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 24},
        "country": {"type": "string", "enum": ["France", "Italy", "Spain", "Japan"]},
        "landmarks": {
            "type": "array",
            "maxItems": 3,
            "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "maxLength": 24},
                    "built": {"type": "integer", "minimum": 0, "maximum": 2100},
                },
                "required": ["name", "built"],
                "additionalProperties": False,
            },
        },
    },
    "required": ["city", "country", "landmarks"],
    "additionalProperties": False,
}
CITY_PROMPT = [{"role": "user", "content": "Describe Paris and its landmarks as JSON."}]


def anthropic_client():
    import anthropic
    return anthropic.Anthropic(base_url=args.base_url, api_key=args.api_key or "none", max_retries=0)


WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "additionalProperties": False, "required": ["city", "unit"],
                   "properties": {"city": {"type": "string", "maxLength": 30},
                                  "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}}}}
WEATHER_ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


def model_entry(model):
    listed = raw("GET", "/v1/models").json()["data"]
    return next(m for m in listed if m["id"] == model)


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def sse_lines(response):
    """The data lines of an SSE response as they arrive."""
    for line in response.iter_lines():
        if line.startswith("data: "):
            yield line[len("data: "):]


def wait_gone(pid, seconds=10):
    deadline = time.monotonic() + seconds
    while os.path.exists(f"/proc/{pid}"):
        assert time.monotonic() < deadline, f"runner {pid} did not exit"
        time.sleep(0.05)


# --- ollama: Ollama's API through its official client (tests/tests/server.rs) -----------------
def ollama_client():
    import ollama
    return ollama.Client(host=args.base_url)


@contextlib.contextmanager
def browser():
    """A headless Chromium (Debian's `chromium` and `chromium-driver`) driven by Selenium, closed
    afterwards. Both paths are given, so that Selenium never tries to download a driver."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,860"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))
    try:
        yield driver
    finally:
        driver.quit()


def waiting(driver, seconds=60):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, seconds)
