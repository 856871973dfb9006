"""Drives the real dashboard in headless Chromium (Debian's chromium and
chromedriver): sees the quarantined agent waiting for approval with its
diagnosis, enters the API key, clicks Approve, and waits until the agent
shows HEALING and then HEALTHY. Saves screenshots of the page: with the
approval waiting (<screenshot>-approval.png) and at the end.

Talks to the Rust test on stdout, one line per milestone:
  SAW APPROVAL <diagnosis>   the approval card is shown
  SAW HEALING                the agent row shows HEALING (the test then
                             lets the healing finish and feeds healthy turns)
  DONE                       the agent row shows HEALTHY; screenshot saved

Usage: dashboard_test.py --url URL --key KEY --agent ID --screenshot PATH
"""

import argparse
import shutil
import sys
import tempfile

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
TIMEOUT_S = 120


def say(line):
    print(line, flush=True)


def css_string(value):
    """A CSS string literal for an attribute selector."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def browser(profile):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1400,1000",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--agent", required=True)
    parser.add_argument("--screenshot", required=True)
    args = parser.parse_args()

    profile = tempfile.mkdtemp(prefix="agent-immune-chromium-")
    driver = browser(profile)
    try:
        wait = WebDriverWait(
            driver, TIMEOUT_S, ignored_exceptions=[StaleElementReferenceException]
        )
        agent = css_string(args.agent)
        row_state = f'#fleet tr[data-agent={agent}] [data-state]'
        card = f'#approvals [data-approval={agent}][data-status="pending"]'

        def state_is(wanted):
            def check(d):
                cells = d.find_elements(By.CSS_SELECTOR, row_state)
                return bool(cells) and cells[0].text == wanted
            return check

        driver.get(args.url.rstrip("/") + "/")
        assert driver.title == "agent-immune", driver.title

        # The quarantined agent and its approval card, with the diagnosis.
        wait.until(state_is("QUARANTINED"))
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, card))
        box = driver.find_element(By.CSS_SELECTOR, card)
        diagnosis = box.find_element(By.CSS_SELECTOR, ".diagnosis").text
        infection = box.find_element(By.CSS_SELECTOR, ".infection").text
        hypotheses = box.find_elements(By.CSS_SELECTOR, ".hypotheses tbody tr")
        assert diagnosis, "no diagnosis shown"
        assert "Infection:" in infection and "σ" in infection, infection
        assert hypotheses, "no hypotheses shown"
        assert box.find_element(By.CSS_SELECTOR, ".reasoning").text.strip()
        driver.save_screenshot(args.screenshot.replace(".png", "-approval.png"))
        say(f"SAW APPROVAL {diagnosis}")

        # The key, asked for once and kept for the tab.
        driver.find_element(By.ID, "api-key").send_keys(args.key)
        driver.find_element(By.ID, "save-key").click()
        wait.until(lambda d: d.find_element(By.ID, "key-status").text == "key set")
        assert driver.execute_script(
            "return sessionStorage.getItem('agent-immune.api-key')"
        ) == args.key

        # Approve (re-found on each try: the page may redraw the card).
        def click_approve(d):
            d.find_element(By.CSS_SELECTOR, card + " button.approve").click()
            return True

        wait.until(click_approve)
        wait.until(state_is("HEALING"))
        say("SAW HEALING")

        wait.until(state_is("HEALTHY"))
        wait.until(lambda d: not d.find_elements(By.CSS_SELECTOR, "#approvals [data-approval]"))
        # The timeline tells the story, as text.
        wait.until(
            lambda d: d.find_elements(By.CSS_SELECTOR, '#events li[data-event="agent_immune.approval_decided"]')
        )
        driver.save_screenshot(args.screenshot)

        errors = [
            entry for entry in driver.get_log("browser") if entry.get("level") == "SEVERE"
        ]
        assert not errors, f"errors in the page's console: {errors}"
        say("DONE")
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # the Rust test shows stderr on failure
        print(f"dashboard test failed: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
