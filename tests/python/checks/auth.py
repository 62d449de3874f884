"""Suite `auth` (tests/tests/server.rs): the API key and CORS."""

from checks.common import *  # noqa: F401,F403


@check("auth")
def api_key_is_required_when_configured():
    assert_error(httpx.post(args.base_url + "/v1/chat/completions", json={"model": args.model, "messages": MESSAGES}),
                 401)
    assert_error(httpx.get(args.base_url + "/v1/models", headers={"Authorization": "Bearer wrong"}), 401)
    assert httpx.get(args.base_url + "/health").status_code == 200
    try:
        openai.OpenAI(base_url=args.base_url + "/v1", api_key="wrong", max_retries=0).models.list()
        raise AssertionError("expected AuthenticationError")
    except openai.AuthenticationError:
        pass
    r = client().chat.completions.create(model=args.model, messages=MESSAGES, temperature=0, max_tokens=16)
    assert "Paris" in r.choices[0].message.content
    # Anthropic clients authenticate with x-api-key, and get errors in Anthropic's shape.
    import anthropic
    m = anthropic_client().messages.create(model=args.model, max_tokens=4, messages=MESSAGES[1:])
    assert m.content[0].text
    try:
        anthropic.Anthropic(base_url=args.base_url, api_key="wrong", max_retries=0).messages.create(
            model=args.model, max_tokens=4, messages=MESSAGES[1:])
        raise AssertionError("expected AuthenticationError")
    except anthropic.AuthenticationError as e:
        assert e.body["type"] == "error" and e.body["error"]["type"] == "authentication_error", e.body


@check("auth")
def cors_preflight_allows_the_configured_origin_only():
    ok = httpx.options(args.base_url + "/v1/chat/completions",
                       headers={"Origin": "http://app.example", "Access-Control-Request-Method": "POST",
                                "Access-Control-Request-Headers": "authorization,content-type"})
    assert ok.headers.get("access-control-allow-origin") == "http://app.example", ok.headers
    other = httpx.options(args.base_url + "/v1/chat/completions",
                          headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"})
    assert other.headers.get("access-control-allow-origin") is None, other.headers


@check("auth")
def the_chat_page_is_served_without_the_key_and_asks_for_it():
    from selenium.webdriver.common.by import By

    page = httpx.get(args.base_url + "/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html"), page.headers
    with browser() as driver:
        driver.get(args.base_url + "/")
        wait = waiting(driver, 30)
        wait.until(lambda d: d.find_element(By.ID, "key-box").is_displayed())
        assert not driver.find_elements(By.CSS_SELECTOR, "#model option")
        driver.find_element(By.ID, "api-key").send_keys(args.api_key)
        driver.find_element(By.CSS_SELECTOR, "#key-form button").click()
        wait.until(lambda d: args.model in [o.get_attribute("value") for o in d.find_elements(By.CSS_SELECTOR, "#model option")])
        assert not driver.find_element(By.ID, "key-box").is_displayed()
