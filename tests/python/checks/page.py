"""Suite `page` (tests/tests/server.rs): the chat page at `/` in a real headless browser (Debian's
chromium, driven by Selenium): pick the model, stream an answer, stop a long one, reload and find
the conversation; a screenshot goes to target/chat-page.png."""

from checks.common import *  # noqa: F401,F403

from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

SCREENSHOT = "target/chat-page.png"
# Greedy, SmolLM2 answers this at length: time to press Stop.
LONG = "Write a very long story about a dragon who learns to fly."


def set_field(driver, field, value):
    element = driver.find_element(By.ID, field)
    element.clear()
    element.send_keys(value)


def last_answer(driver):
    return driver.find_elements(By.CSS_SELECTOR, ".message.assistant")[-1]


def text_of(element):
    return element.find_element(By.CSS_SELECTOR, ".content").get_attribute("textContent")


def ask(driver, text):
    driver.find_element(By.ID, "prompt").send_keys(text)
    driver.find_element(By.ID, "send").click()


@check("page")
def the_chat_page_streams_an_answer_stops_one_and_remembers_them():
    expected = client().chat.completions.create(model=args.model, messages=MESSAGES, temperature=0, max_tokens=32)
    with browser() as driver:
        driver.get(args.base_url + "/")
        wait = waiting(driver)
        wait.until(lambda d: args.model in [o.get_attribute("value") for o in d.find_elements(By.CSS_SELECTOR, "#model option")])
        Select(driver.find_element(By.ID, "model")).select_by_value(args.model)
        set_field(driver, "system", SYSTEM)
        set_field(driver, "temperature", "0")
        set_field(driver, "max-tokens", "32")
        ask(driver, FRANCE)
        wait.until(lambda d: last_answer(d).get_attribute("data-state") == "done")
        answer = last_answer(driver)
        # The page sent what the API is sent (system prompt, temperature, max tokens) and
        # showed the answer as it streamed in, a piece at a time.
        assert text_of(answer) == expected.choices[0].message.content, (text_of(answer), expected)
        assert "Paris" in text_of(answer)
        assert int(answer.get_attribute("data-chunks")) > 3, answer.get_attribute("data-chunks")

        # A long answer, stopped: it stays as far as it got, and the model is free again.
        set_field(driver, "system", "")
        set_field(driver, "max-tokens", "2000")
        ask(driver, LONG)
        wait.until(lambda d: len(text_of(last_answer(d))) > 20)
        driver.find_element(By.ID, "stop").click()
        wait.until(lambda d: last_answer(d).get_attribute("data-state") == "stopped")
        stopped = text_of(last_answer(driver))
        time.sleep(1)
        assert text_of(last_answer(driver)) == stopped
        assert driver.find_element(By.ID, "send").is_enabled()
        assert not driver.find_element(By.ID, "stop").is_enabled()
        quick = client().chat.completions.create(model=args.model, messages=MESSAGES, max_tokens=4, timeout=30)
        assert quick.usage.completion_tokens == 4

        # Reloaded, the page shows the conversation from the browser's storage.
        driver.refresh()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".message")) == 4)
        contents = [text_of(m) for m in driver.find_elements(By.CSS_SELECTOR, ".message")]
        assert contents[0] == FRANCE and "Paris" in contents[1], contents
        assert contents[3] == stopped, contents
        assert last_answer(driver).get_attribute("data-state") == "stopped"
        titles = [li.text for li in driver.find_elements(By.CSS_SELECTOR, "#conversations li")]
        assert titles == [FRANCE], titles
        # The settings as they were last set.
        assert driver.find_element(By.ID, "max-tokens").get_attribute("value") == "2000"
        assert driver.find_element(By.ID, "system").get_attribute("value") == ""
        os.makedirs(os.path.dirname(SCREENSHOT), exist_ok=True)
        driver.save_screenshot(SCREENSHOT)
        print(f"       screenshot: {SCREENSHOT}")
