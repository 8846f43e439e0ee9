"""The dashboard in a real headless Chromium against real processes: log in through the form, queue an
email through the API, watch it appear in the job list and change status, open its timeline, preview a
stored template.

Uses Debian's /usr/bin/chromium and /usr/bin/chromedriver (scripts/ensure-chromium installs them); the
driver path is given explicitly, so Selenium Manager never runs (the fixture fails if it starts) and nothing
is downloaded; Chromium resolves no name but the loopback address, so the test makes no network request.
"""

from __future__ import annotations

import datetime as dt
import pathlib
import shutil
import tempfile
from collections.abc import Iterator

import pytest
import requests

from tests.e2e.conftest import running_system

pytestmark = pytest.mark.e2e

CHROMIUM = pathlib.Path("/usr/bin/chromium")
CHROMEDRIVER = pathlib.Path("/usr/bin/chromedriver")
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--window-size=1280,1000",
    # Nothing but the system under test: without this, Chromium looked up accounts.google.com,
    # clients2.google.com, *.googleapis.com and start.duckduckgo.com (Debian's default search) during the
    # test (strace, Chromium 156 of Debian 12). Every name but the loopback address fails before DNS.
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
)
OPERATOR = "e2e-operator-token-0123456789"


@pytest.fixture
def browser(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    """Headless Chromium driven by Selenium; skipped when the browser is not installed."""
    if not CHROMIUM.exists() or not CHROMEDRIVER.exists():
        pytest.skip(f"needs {CHROMIUM} and {CHROMEDRIVER}: Debian's chromium and chromium-driver "
                    "(scripts/ensure-chromium installs them)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (pip install -e '.[test]')")
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.selenium_manager import SeleniumManager

    def no_selenium_manager(*_: object) -> dict[str, str]:
        raise AssertionError("Selenium Manager was started (it looks drivers up online); give it the paths")

    # Selenium starts its manager only when a path is missing; this proves it never does here.
    monkeypatch.setattr(SeleniumManager, "binary_paths", no_selenium_manager)

    profile = tempfile.mkdtemp(prefix="mailer-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def test_an_email_appears_in_the_dashboard_changes_status_and_shows_its_timeline(
    database_url: str, tmp_path: pathlib.Path, browser
):
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException, WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = browser
    # The page reloads itself meanwhile: an element found just before may be gone (stale), or chromedriver may say
    # so in its own words ("Node with given id does not belong to the document", a bare WebDriverException). A
    # wait that never succeeds still fails, with its message, at its timeout.
    flaky = (NoSuchElementException, StaleElementReferenceException, WebDriverException)

    def wait_for(condition, message: str, timeout: float = 30):  # type: ignore[no-untyped-def]
        return WebDriverWait(driver, timeout, poll_frequency=0.2, ignored_exceptions=flaky).until(condition, message)

    with running_system(
        database_url, tmp_path, MAILER_SECRET_KEY="e2e-dashboard-secret", MAILER_OPERATOR_TOKEN=OPERATOR,
        MAILER_DASHBOARD_COOKIE_SECURE="0",  # plain http on loopback: a Secure cookie is not ours to send
    ) as system:
        # Not logged in: the dashboard sends the browser to the login form.
        driver.get(f"{system.web_url}/dashboard")
        assert "/dashboard/login" in driver.current_url
        driver.find_element(By.ID, "token").send_keys(system.api_key)
        driver.find_element(By.ID, "login").click()
        wait_for(lambda d: "Overview" in d.find_element(By.TAG_NAME, "header").text, "the app's dashboard")
        app_url = driver.current_url.split("?")[0]
        assert driver.find_element(By.ID, "daily-chart").tag_name == "svg"
        assert driver.find_element(By.ID, "engagement-chart").tag_name == "svg"
        assert driver.find_element(By.ID, "total-delivered").text == "0"

        # The job list, with the auto-refresh box ticked through the filter form.
        driver.find_element(By.LINK_TEXT, "Jobs").click()
        wait_for(lambda d: d.find_element(By.ID, "jobs"), "the job list")
        driver.find_element(By.NAME, "refresh").click()
        driver.find_element(By.CSS_SELECTOR, "form.filters button[type=submit]").click()
        wait_for(lambda d: "refresh=1" in d.current_url, "auto-refresh on")

        # Queue an email through the API, due in a few seconds: first `scheduled`, then `sent`. (15 s: the list
        # must refresh at least once before the send, also on a loaded 2-core box; 6 s failed there once.)
        send_at = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=15)).isoformat()
        queued = requests.post(
            f"{system.web_url}/queue",
            json={"from": {"email": "shop@example.com"}, "to": [{"email": "ann@example.org"}],
                  "subject": "Your order", "text": "Thanks", "send_at": send_at},
            headers={**system.auth, "X-Request-Id": "browser-e2e-1"}, timeout=5,
        )
        assert queued.status_code == 202, queued.text
        job_id = queued.json()["id"]
        row = f"job-{job_id}"

        first = wait_for(lambda d: d.find_element(By.ID, row).get_attribute("data-status"), "the job in the list")
        assert first in {"scheduled", "queued", "sending"}, first
        driver.save_screenshot(str(tmp_path / "jobs-before.png"))
        wait_for(lambda d: d.find_element(By.ID, row).get_attribute("data-status") == "sent", "the job sent")
        wait_for(lambda d: "ann@example.org" in d.find_element(By.ID, row).text, "the recipient in the row")
        driver.save_screenshot(str(tmp_path / "jobs-sent.png"))

        # Its page: the recipient, the request id of the API call, and the timeline.
        # (the list may reload itself under the click: tried again until the job page shows)
        wait_for(lambda d: d.find_elements(By.ID, "timeline") or d.find_element(By.LINK_TEXT, job_id).click(),
                 "the click")
        wait_for(lambda d: d.find_element(By.ID, "timeline"), "the job page")
        assert driver.find_element(By.ID, "job-status").text == "sent"
        assert driver.find_element(By.ID, "request-id").text == "browser-e2e-1"
        events = [cell.text for cell in driver.find_elements(By.CSS_SELECTOR, "#timeline tbody td:nth-child(2)")]
        assert events == ["scheduled", "sending", "sent"]

        def recipient_tracked(d) -> bool:  # type: ignore[no-untyped-def]
            d.refresh()  # the simulator's events arrive on their own schedule
            return "delivered" in d.find_element(By.ID, "recipients").text

        wait_for(recipient_tracked, "Mailjet's delivered event on the page")
        assert "ann@example.org" in driver.find_element(By.ID, "recipients").text
        driver.save_screenshot(str(tmp_path / "job.png"))

        # The activity page (issue 22): the recipient's changes newest first, each linking its job. The simulator
        # may have sent an open (and a click) by now: they are newer, so on top.
        driver.find_element(By.LINK_TEXT, "Activity").click()
        changes = wait_for(lambda d: d.find_elements(By.CSS_SELECTOR, "#activity tbody tr[data-type]"), "the feed")
        kinds = [c.get_attribute("data-type") for c in changes]
        assert kinds[-2:] == ["email.delivered", "email.sent"], kinds
        assert set(kinds[:-2]) <= {"email.opened", "email.clicked"}, kinds
        assert changes[0].find_element(By.LINK_TEXT, job_id)

        # A stored template: listed from the overview, its preview rendered in a sandboxed frame whose html
        # (a quote, a closing </iframe> and a script in it) stays inside the frame and runs nothing (twice
        # stopped: by the sandbox, and by the page's CSP, which a srcdoc frame inherits).
        template = requests.post(
            f"{system.web_url}/templates", headers=system.auth, timeout=5,
            json={"name": "receipt", "subject": "Receipt for {{ name }}", "text": "Hi {{ name }}",
                  "html": '<p id="inner">"Hello" {{ name }}</p></iframe>'
                          '<script>document.getElementById("inner").textContent="ran"</script>',
                  "variables": {"type": "object", "examples": [{"name": "Ann"}]}},
        )
        assert template.status_code == 201, template.text
        driver.get(app_url)
        driver.find_element(By.ID, "templates-link").click()
        wait_for(lambda d: d.find_element(By.LINK_TEXT, "receipt"), "the template list").click()
        wait_for(lambda d: d.find_element(By.ID, "preview-subject").text == "Receipt for Ann", "the preview")
        preview_url = driver.current_url
        driver.switch_to.frame(driver.find_element(By.ID, "preview-html"))
        assert driver.find_element(By.ID, "inner").text == '"Hello" Ann'  # the template's script did not run
        driver.switch_to.default_content()
        assert driver.current_url == preview_url and driver.find_element(By.ID, "source")
        driver.save_screenshot(str(tmp_path / "template.png"))

        # Another app's pages do not exist for this key.
        driver.get(app_url.rsplit("/", 1)[0] + "/999999/jobs")
        assert "404" in driver.find_element(By.TAG_NAME, "h1").text

        # Logging out ends the session.
        driver.get(app_url)
        driver.find_element(By.CSS_SELECTOR, "header form button").click()
        wait_for(lambda d: "/dashboard/login" in d.current_url, "the login form again")
        driver.get(app_url)
        assert "/dashboard/login" in driver.current_url

    for name in ("jobs-before.png", "jobs-sent.png", "job.png", "template.png"):
        assert (tmp_path / name).stat().st_size > 1000


def test_the_unsubscribe_link_of_a_sent_bulk_message_works_in_a_browser(
    database_url: str, tmp_path: pathlib.Path, browser
):
    """Issue 22: open the List-Unsubscribe link as the simulator recorded it, press the button, and the address
    is on /suppressions with scope bulk."""
    from selenium.webdriver.common.by import By

    from tests.e2e.conftest import wait_until

    driver = browser
    with running_system(database_url, tmp_path) as system:
        queued = requests.post(
            f"{system.web_url}/queue",
            json={"from": {"email": "news@example.com"}, "to": [{"email": "Ann@example.org"}],
                  "subject": "Our news", "text": "News", "priority": "bulk"},
            headers=system.auth, timeout=5,
        )
        assert queued.status_code == 202, queued.text
        job_id = queued.json()["id"]

        def recorded() -> dict | None:
            messages = requests.get(f"{system.simulator_url}/_sim/sends", timeout=5).json()["messages"]
            return next((m for m in messages if m["custom_id"] == job_id), None)

        message = wait_until(recorded, 30, message="the bulk message at the simulator")
        assert message["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        link = message["headers"]["List-Unsubscribe"].strip("<>")
        assert link.startswith(f"{system.web_url}/unsubscribe/")

        driver.get(link)
        assert "ann@example.org" in driver.find_element(By.TAG_NAME, "body").text
        assert driver.find_elements(By.TAG_NAME, "script") == []
        driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
        wait_until(lambda: "Unsubscribed" in driver.find_element(By.TAG_NAME, "h1").text, 10,
                   message="the confirmation page")
        driver.save_screenshot(str(tmp_path / "unsubscribed.png"))

        listed = requests.get(f"{system.web_url}/suppressions", headers=system.auth, timeout=5).json()["items"]
        assert [(item["email"], item["scope"], item["source"]) for item in listed] == [
            ("ann@example.org", "bulk", "unsubscribe")
        ]
        story = requests.get(f"{system.web_url}/status/{job_id}", headers=system.auth, timeout=5).json()
        assert [r["status"] for r in story["recipients"]] == ["unsubscribed"]  # the link moved it
