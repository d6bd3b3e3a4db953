"""On Slurm, in a real browser (Debian's chromium, headless, driven by Selenium): the dashboard of a real
``hpcgw serve``. A team sees its running job and none of another team's; the job's chart gains a point when an
epoch ends, without a reload; cancel from the page cancels the job in Slurm; a wrong token gets the login page.
The tests write the screenshots of the four pages to docs/ui/."""

from __future__ import annotations

import base64
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from devcluster.spec import ClusterSpec
from tests.gateway.conftest import TOKENS
from tests.slurm.cli_support import Gateway
from tests.slurm.support import python_algorithm

pytestmark = pytest.mark.slurm
ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "docs" / "ui"
TRAINER = python_algorithm("curves", ROOT / "tests" / "data" / "ui_trainer.py")


@pytest.fixture
def gw(cluster: ClusterSpec, tmp_path: Path) -> Iterator[Gateway]:
    (tmp_path / "datasets" / "d" / "v1").mkdir(parents=True)
    gateway = Gateway(tmp_path)
    gateway.start()
    api(gateway, "admin", "POST", "/v1/algorithms", json={**TRAINER, "shared": True})  # bob's jobs run it too
    yield gateway
    gateway.stop()


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))
    try:
        yield driver
    finally:
        driver.quit()


def api(gw: Gateway, user: str, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
    response = httpx.request(
        method, f"{gw.url}{path}", headers={"Authorization": f"Bearer {TOKENS[user]}"}, timeout=30, **kwargs
    )
    assert response.is_success, response.text
    return response.json()  # type: ignore[no-any-return]


def submit(gw: Gateway, user: str, name: str, **params: object) -> dict[str, Any]:
    body = {
        "name": name,
        "algorithm": "curves",
        "dataset_id": "d",
        "train_data_version_hash": "v1",
        "time_limit_min": 10,
        "parameters": params,
    }
    return api(gw, user, "POST", "/v1/jobs", json=body)


def wait_job(
    gw: Gateway, user: str, job_id: str, done: Callable[[dict[str, Any]], object], timeout_s: float = 180
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        job = api(gw, user, "GET", f"/v1/jobs/{job_id}")
        if done(job):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.5)


def log_in(browser: webdriver.Chrome, gw: Gateway, token: str, page: str = "/ui") -> None:
    browser.get(f"{gw.url}{page}")
    WebDriverWait(browser, 20).until(lambda b: b.find_elements(By.ID, "token"))
    browser.find_element(By.ID, "token").send_keys(token)
    button = browser.find_element(By.CSS_SELECTOR, "#login button")
    button.click()
    # The form's POST answers with the cookie and a new page: wait for that page, not only for the click (a second
    # back-to-back pass read the cookie before the answer had set it).
    WebDriverWait(browser, 20).until(expected_conditions.staleness_of(button))


def points(browser: webdriver.Chrome) -> int:
    return int(browser.execute_script("return document.getElementById('curves').data[0].x.length"))


def shot(browser: webdriver.Chrome, name: str) -> None:
    """The whole page, not just the window (Chrome's own capture, through the DevTools protocol)."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    data = browser.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
    (SHOTS / f"{name}.png").write_bytes(base64.b64decode(data["data"]))


def sacct_state(slurm_id: str) -> str:
    out = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-o", "State", "-j", slurm_id], capture_output=True, text=True, check=True
    )
    return out.stdout.strip().split(" ")[0]


def test_a_team_sees_its_own_live_job_and_cancels_it_from_the_page(gw: Gateway, browser: webdriver.Chrome) -> None:
    mine = submit(gw, "alice", "a-curves", EPOCHS=60, EPOCH_S=4, LR=0.3)
    theirs = submit(gw, "bob", "b-secret", EPOCHS=60, EPOCH_S=4)
    running = wait_job(gw, "alice", mine["id"], lambda j: j["state"] == "running" and j["slurm_job_id"])
    wait_job(gw, "bob", theirs["id"], lambda j: j["state"] in ("running", "queued"))

    log_in(browser, gw, TOKENS["alice"])
    WebDriverWait(browser, 20).until(lambda b: b.current_url.endswith("/ui/teams/team-a"))
    rows = browser.find_elements(By.CSS_SELECTOR, f"#running tr[data-job-id='{mine['id']}']")
    assert len(rows) == 1 and "a-curves" in rows[0].text
    assert theirs["id"][:8] not in browser.page_source and "b-secret" not in browser.page_source
    browser.get(f"{gw.url}/ui/jobs/{theirs['id']}")
    assert "Not found" in browser.find_element(By.TAG_NAME, "h1").text
    browser.get(f"{gw.url}/ui/teams/team-b")
    assert "Not found" in browser.find_element(By.TAG_NAME, "h1").text

    browser.get(f"{gw.url}/ui/teams/team-a")
    shot(browser, "team")
    browser.get(f"{gw.url}/ui/jobs/{mine['id']}")
    WebDriverWait(browser, 30).until(lambda b: points(b) >= 1)
    browser.execute_script("window.hpcgwSamePage = true")
    before = points(browser)
    WebDriverWait(browser, 60, poll_frequency=0.5).until(lambda b: points(b) > before)  # the next epoch's line
    assert browser.execute_script("return window.hpcgwSamePage") is True  # updated in place, not reloaded
    recorded = api(gw, "alice", "GET", f"/v1/jobs/{mine['id']}/metrics")["epochs"]
    assert len(recorded) >= before + 1
    shot(browser, "job")

    browser.find_element(By.ID, "cancel-button").click()
    browser.switch_to.alert.accept()
    slurm_id = running["slurm_job_id"]
    deadline = time.monotonic() + 120
    while sacct_state(slurm_id) != "CANCELLED":  # Slurm's own record
        assert time.monotonic() < deadline, sacct_state(slurm_id)
        time.sleep(1)
    assert wait_job(gw, "alice", mine["id"], lambda j: j["state"] == "cancelled")["state"] == "cancelled"
    assert sacct_state(api(gw, "bob", "GET", f"/v1/jobs/{theirs['id']}")["slurm_job_id"] or "0") != "CANCELLED"
    api(gw, "bob", "POST", f"/v1/jobs/{theirs['id']}/cancel")


def test_a_wrong_token_gets_the_login_page(gw: Gateway, browser: webdriver.Chrome) -> None:
    log_in(browser, gw, "not-a-token-anyone-has", page="/ui/teams/team-a")
    assert "does not know this token" in browser.find_element(By.ID, "login-error").text
    assert browser.find_elements(By.ID, "token")
    shot(browser, "login")
    browser.get(f"{gw.url}/ui/login")
    browser.add_cookie({"name": "hpcgw_ui", "value": "forged", "path": "/ui"})
    browser.get(f"{gw.url}/ui/teams/team-a")
    assert "/ui/login" in browser.current_url and browser.find_elements(By.ID, "token")
    cookie = browser.get_cookie("hpcgw_ui")
    assert cookie is not None and cookie["value"] == "forged"
    log_in(browser, gw, TOKENS["alice"])
    cookie = browser.get_cookie("hpcgw_ui")
    assert cookie is not None and cookie["httpOnly"] is True
    assert browser.execute_script("return document.cookie") == ""  # scripts cannot read the token


def test_the_sweep_page_marks_the_best_task_and_the_admin_sees_every_team(
    gw: Gateway, browser: webdriver.Chrome
) -> None:
    body = {
        "name": "lr-sweep",
        "max_parallel": 2,
        "space": {"kind": "grid", "grid": {"LR": [0.1, 0.3, 0.5, 0.7]}},
        "base": {
            "algorithm": "curves",
            "dataset_id": "d",
            "train_data_version_hash": "v1",
            "time_limit_min": 10,
            "parameters": {"EPOCHS": 2, "EPOCH_S": 0.2},
        },
    }
    sweep = api(gw, "alice", "POST", "/v1/sweeps", json=body)
    deadline = time.monotonic() + 300
    while api(gw, "alice", "GET", f"/v1/sweeps/{sweep['id']}")["counts"] != {"succeeded": 4}:
        assert time.monotonic() < deadline
        time.sleep(1)
    log_in(browser, gw, TOKENS["alice"], page=f"/ui/sweeps/{sweep['id']}?metric=accuracy&mode=max")
    WebDriverWait(browser, 20).until(lambda b: b.find_elements(By.CSS_SELECTOR, "#tasks tr.best"))
    best = browser.find_element(By.CSS_SELECTOR, "#tasks tr.best")
    assert best.get_attribute("data-task") == "3" and "0.7" in best.text  # the highest LR has the best accuracy
    plotted = browser.execute_script("return document.getElementById('chart-0').data[0].x")
    assert sorted(plotted) == [0.1, 0.3, 0.5, 0.7]
    shot(browser, "sweep")

    browser.delete_all_cookies()
    log_in(browser, gw, TOKENS["admin"])
    WebDriverWait(browser, 20).until(lambda b: b.current_url.endswith("/ui/admin"))
    teams = [row.get_attribute("data-team") for row in browser.find_elements(By.CSS_SELECTOR, "#teams tr[data-team]")]
    assert teams == ["team-a", "team-b"]
    assert browser.find_element(By.CSS_SELECTOR, "#teams tr[data-team='team-a'] td.succeeded").text == "4"
    assert browser.find_element(By.CSS_SELECTOR, "#teams tr[data-team='team-b'] td.succeeded").text == "0"
    assert "alive" in browser.find_element(By.ID, "worker").text
    per_minute = browser.execute_script("return document.getElementById('per-minute').data[0].y")
    assert sum(per_minute) >= 4
    shot(browser, "admin")
