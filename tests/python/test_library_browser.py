"""The library's page in a real browser (Debian's chromium, headless, driven by selenium through
chromedriver): the table loads, a filter narrows it, a detail view opens with its components
diagram and hashes, the duplicates and disk-use views draw, and a model titled
`<script>alert(1)</script>` shows that text literally without running it. Screenshots are kept
in the test's temporary folder (CKPTKIT_TEST_TMP/library-browser-*)."""
import os
import shutil
import tempfile
import unittest

from ckpt_testlib import run
from library_fixtures import XSS_TITLE, XSS_TRIGGER, make_models
from library_server import Server

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
try:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import Select, WebDriverWait
    HAVE_SELENIUM = True
except ImportError:
    HAVE_SELENIUM = False

SKIP = None
if not HAVE_SELENIUM:
    SKIP = "python3-selenium is not installed"
elif not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
    SKIP = "chromium / chromium-driver are not installed (scripts/deps.sh installs them)"


@unittest.skipIf(SKIP, SKIP)
class Page(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        root = os.environ.get("CKPTKIT_TEST_TMP") or tempfile.gettempdir()
        os.makedirs(root, exist_ok=True)
        # Kept after the test: the screenshots are its artifacts (the models are removed).
        cls.tmp = tempfile.mkdtemp(prefix="library-browser-", dir=root)
        cls.models = os.path.join(cls.tmp, "models")
        cls.files = make_models(cls.models)
        cls.db = os.path.join(cls.tmp, "lib.sqlite")
        run("library", "index", cls.models, "--db", cls.db, "--no-hash", check=False)
        run("library", "index", cls.models, "--db", cls.db, check=False)  # hashes too
        cls.server = Server(cls.db)
        opts = webdriver.ChromeOptions()
        opts.binary_location = CHROMIUM
        for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  "--window-size=1400,1000", f"--user-data-dir={cls.tmp}/chrome-profile"):
            opts.add_argument(a)
        opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        cls.driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
        cls.driver.set_page_load_timeout(30)

    @classmethod
    def tearDownClass(cls):
        cls.driver.quit()
        cls.server.stop()
        shutil.rmtree(cls.models, ignore_errors=True)
        shutil.rmtree(os.path.join(cls.tmp, "chrome-profile"), ignore_errors=True)

    def wait(self, cond, timeout=15):
        # A row read while the table is redrawn goes stale; the condition is then tried again.
        return WebDriverWait(self.driver, timeout,
                             ignored_exceptions=(StaleElementReferenceException,)).until(cond)

    def shot(self, name):
        path = os.path.join(self.tmp, name + ".png")
        self.assertTrue(self.driver.save_screenshot(path))
        self.assertGreater(os.path.getsize(path), 1000)
        return path

    def rows(self):
        return self.driver.find_elements(By.CSS_SELECTOR, "#models tbody tr")

    def settled_rows(self, n=None):
        """The table's rows once the page's last request has been drawn (aria-busy false) and,
        with n, once there are n of them. Rows read before that may be replaced under us."""
        def ready(d):
            if d.find_element(By.ID, "models").get_attribute("aria-busy") != "false":
                return False
            rows = self.rows()
            return rows if n is None or len(rows) == n else False
        return self.wait(ready)

    def click_row(self, text):
        """Clicks the row that shows `text`; a redraw between finding and clicking retries."""
        def click(d):
            for r in self.rows():
                if text in r.text:
                    r.click()
                    return True
            return False
        self.wait(click)

    def no_alert(self):
        try:
            alert = self.driver.switch_to.alert
            text = alert.text
            alert.dismiss()
            self.fail(f"a script from a model's metadata ran: alert({text})")
        except Exception as e:  # NoAlertPresentException: as it should be
            if "a script from" in str(e):
                raise

    def test_table_filter_detail(self):
        d = self.driver
        d.get(self.server.url)
        self.wait(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")
        n_all = len(self.settled_rows())
        self.assertEqual(n_all, len(self.files) + 2)  # + the two unreadable files
        self.assertIn(f"{n_all} of {n_all} files", d.find_element(By.ID, "count").text)
        self.shot("table")
        # The script title is shown as text and did not run.
        self.no_alert()
        self.assertIn(XSS_TITLE, d.find_element(By.ID, "models").text)
        self.assertEqual(d.execute_script("return document.querySelectorAll('#models script, #models img').length"), 0)
        # Filter by kind, then by text.
        Select(d.find_element(By.ID, "kind")).select_by_visible_text("LoRA")
        self.settled_rows(4)
        self.shot("filtered-lora")
        box = d.find_element(By.ID, "q")
        box.send_keys("zorblax")
        self.assertIn(XSS_TITLE, self.settled_rows(1)[0].text)
        # Sorting by size, largest first (two clicks).
        Select(d.find_element(By.ID, "kind")).select_by_index(0)
        box.clear()
        box.send_keys(" ")
        box.clear()
        d.execute_script("document.getElementById('q').dispatchEvent(new Event('input'))")
        self.settled_rows(n_all)
        th = d.find_element(By.CSS_SELECTOR, "th[data-sort=size]")
        th.click()
        self.wait(lambda d: "sorted-asc" in th.get_attribute("class"))
        th.click()
        self.wait(lambda d: "sorted-desc" in th.get_attribute("class"))
        self.wait(lambda d: self.files["sd15"] in self.rows()[0].text)
        # Open the script-titled LoRA's detail view.
        d.get(self.server.url)
        self.wait(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")
        self.settled_rows(n_all)
        self.click_row(XSS_TITLE)
        title = self.wait(EC.visibility_of_element_located((By.ID, "detail-title")))
        self.assertEqual(title.text, XSS_TITLE)
        self.no_alert()
        words = d.find_element(By.ID, "trigger-words").text
        self.assertIn("<img src=x onerror=alert(2)>", words)
        self.assertIn("zorblax", words)
        self.assertEqual(d.execute_script("return document.querySelectorAll('#detail-view script, #detail-view img').length"), 0)
        hashes = d.find_element(By.ID, "hashes").text
        self.assertRegex(hashes, r"sha256\s+[0-9a-f]{64}")
        self.assertGreaterEqual(len(d.find_elements(By.CSS_SELECTOR, "#hashes button.copy")), 3)
        self.assertIn(XSS_TRIGGER.split(",")[0], d.find_element(By.ID, "metadata").text)
        self.shot("detail-xss")
        # A checkpoint's components diagram.
        d.get(self.server.url + "#/")
        self.settled_rows(n_all)
        self.click_row(self.files["sd15"])
        self.wait(EC.visibility_of_element_located((By.ID, "detail-title")))
        rects = d.find_elements(By.CSS_SELECTOR, "#detail-view svg rect")
        self.assertGreaterEqual(len(rects), 3)  # UNet, text encoder, VAE
        self.shot("detail-checkpoint")
        # The dangerous pickle says so in plain words.
        d.get(self.server.url + "#/")
        self.settled_rows(n_all)
        self.click_row(self.files["evil"])
        self.wait(EC.visibility_of_element_located((By.ID, "detail-title")))
        self.assertIn("would run code", d.find_element(By.ID, "detail-view").text)

    def open_detail(self, server, model_id):
        d = self.driver
        d.get(server.url + f"#/model/{model_id}")
        d.refresh()  # the hash alone does not reload the page (a new server's token)
        self.wait(EC.visibility_of_element_located((By.ID, "detail-title")))

    def test_action_buttons_only_with_allow_actions_and_confirmed(self):
        import json
        d = self.driver
        sd15 = self.files["sd15"]
        folder = os.path.dirname(sd15)
        mid = json.loads(run("library", "show", sd15, "--db", self.db, "--json").stdout)["model"]["id"]
        self.open_detail(self.server, mid)
        self.assertEqual(d.find_elements(By.CSS_SELECTOR, "#actions button"), [])
        with Server(self.db, "--allow-actions") as srv:
            self.open_detail(srv, mid)
            buttons = d.find_elements(By.CSS_SELECTOR, "#actions button")
            self.assertEqual([b.text for b in buttons], ["prune", "split"])
            before = sorted(os.listdir(folder))
            # Declined: nothing is posted, nothing written.
            d.execute_script("window.__asked = []; window.confirm = (m) => { window.__asked.push(m); return false; }")
            buttons[0].click()
            self.assertEqual(len(d.execute_script("return window.__asked")), 1)
            self.assertIn("prune", d.execute_script("return window.__asked[0]"))
            self.assertEqual(d.find_element(By.ID, "action-result").text, "")
            self.assertEqual(sorted(os.listdir(folder)), before)
            # Confirmed: the page posts with its token; the copy appears beside the file.
            d.execute_script("window.confirm = () => true")
            buttons[0].click()
            self.wait(lambda d: d.find_element(By.ID, "action-result").text.startswith("Wrote"), 120)
            self.assertIn(os.path.join(folder, "sd15-pruned.safetensors"),
                          d.find_element(By.ID, "action-result").text)
            self.assertTrue(os.path.isfile(os.path.join(folder, "sd15-pruned.safetensors")))
            self.shot("detail-actions")
            os.remove(os.path.join(folder, "sd15-pruned.safetensors"))

    def test_dupes_and_stats_views(self):
        d = self.driver
        d.get(self.server.url + "#/dupes")
        self.wait(lambda d: "kohya-sd15 (1).safetensors" in d.find_element(By.ID, "dupes-view").text)
        self.shot("dupes")
        d.get(self.server.url + "#/stats")
        self.wait(lambda d: d.find_elements(By.CSS_SELECTOR, "#chart-kind rect"))
        self.assertIn("LoRA", d.find_element(By.ID, "stats-view").text)
        self.shot("stats")
        self.no_alert()
        severe = [e for e in d.get_log("browser") if e["level"] == "SEVERE"]
        self.assertEqual(severe, [])


if __name__ == "__main__":
    unittest.main()
