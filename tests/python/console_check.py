"""Drives the web console in headless Chromium (Playwright): an operator signs in, sees the
overview and the channels, imports keys, disables and enables one, is told why the channel's
balances cannot be read, downloads the stored keys, creates a user and sees a bad price refused
inline; that user signs in, creates a key, chats in the playground (streamed) and finds the
call, with its charge, in the request log; the operator's overview then counts it, the
operator filters and inspects the user's video task and filters the request log, and signs
out: the session's token is refused from then on. Every page is screenshotted into SHOTS.

usage: console_check.py BASE_URL ADMIN_NAME ADMIN_PASSWORD CHANNEL MODEL SHOTS
"""

import hashlib
import json
import os
import re
import sys

from playwright.sync_api import expect, sync_playwright

BASE, ADMIN, ADMIN_PASSWORD, CHANNEL, MODEL, SHOTS = sys.argv[1:7]
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
# Chromium on this closed network: no background connections, no sandbox (root in CI).
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


def shot(page, name):
    page.screenshot(path=os.path.join(SHOTS, f"{name}.png"), full_page=True)


def sign_in(page, name, password):
    page.goto(f"{BASE}/console")
    page.get_by_label("User name").fill(name)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#who")).to_contain_text(name)


def open_page(page, title):
    page.get_by_role("link", name=title, exact=True).click()
    expect(page.get_by_role("heading", level=1)).to_be_visible()


def main():
    os.makedirs(SHOTS, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        # Script errors fail the check; a refused request (a 401 before signing in, the bad
        # price's 400) is the browser's note of an answer the page handled.
        page.on("console", lambda m: errors.append(m.text)
                if m.type == "error" and not m.text.startswith("Failed to load resource") else None)

        # A wrong password is said so, on the sign-in form.
        page.goto(f"{BASE}/console")
        page.get_by_label("User name").fill(ADMIN)
        page.get_by_label("Password").fill("not the password")
        page.get_by_role("button", name="Sign in").click()
        expect(page.locator("#sign-in .error")).to_contain_text("Wrong user name or password")
        shot(page, "sign-in")

        # The operator.
        sign_in(page, ADMIN, ADMIN_PASSWORD)
        expect(page.get_by_role("heading", name="Overview")).to_be_visible()
        shot(page, "overview")

        open_page(page, "Channels")
        card = page.locator(f'[data-channel="{CHANNEL}"]')
        expect(card).to_be_visible()
        page.get_by_label("Keys", exact=True).fill("sk-console-imported-1\nsk-console-imported-2,3\nsk-console-imported-1\nnot a key\n")
        page.get_by_role("button", name="Import").click()
        report = page.locator("#page .ok")
        expect(report).to_contain_text("Imported 2 new, 0 already stored (updated), 1 repeated in the text.")
        expect(report).to_contain_text("Refused 1: line 4: a key is empty or contains spaces")
        page.wait_for_timeout(1800)  # the page reloads its channels
        expect(card.get_by_role("cell", name="Remove").first).to_be_visible()

        # An imported key disabled by the operator, shown as such, then enabled again.
        row = card.locator(f'[data-key="{hashlib.sha256(b"sk-console-imported-1").hexdigest()}"]')
        expect(row.locator("[data-state]")).to_have_text("healthy")
        row.get_by_role("button", name="Disable").click()
        expect(row.locator("[data-state]")).to_have_text("disabled by the operator")
        expect(card.get_by_role("status")).to_contain_text("no call uses it until it is enabled")
        shot(page, "channels-key-disabled")
        row.get_by_role("button", name="Enable").click()
        expect(row.locator("[data-state]")).to_have_text("healthy")
        # This vendor's balances cannot be read: the card says why.
        card.get_by_role("button", name="Refresh balances").click()
        expect(card.get_by_role("status")).to_contain_text("has no 'balance' operation")
        # The stored keys download as a file that imports again.
        with page.expect_download() as download:
            card.get_by_role("button", name="Export stored keys").click()
        assert download.value.suggested_filename == f"{CHANNEL}-keys.json", download.value.suggested_filename
        exported = json.loads(open(download.value.path()).read())
        assert sorted(k["key"] for k in exported) == ["sk-console-imported-1", "sk-console-imported-2"], exported
        expect(card.get_by_role("status")).to_contain_text("Exported 2 stored keys")
        shot(page, "channels")

        open_page(page, "Users")
        create = page.locator("form").filter(has=page.get_by_role("button", name="Create", exact=True))
        create.get_by_label("Name", exact=True).fill("carol")
        create.get_by_label("Password").fill("carol's long password")
        create.get_by_label("Balance").fill("5")
        create.get_by_role("button", name="Create", exact=True).click()
        expect(page.locator('[data-balance="carol"]')).to_have_text("5.000000")
        top_up = page.get_by_label("top up carol")
        top_up.fill("2.5")
        top_up.locator("xpath=..").get_by_role("button", name="Add").click()
        expect(page.locator('[data-balance="carol"]')).to_have_text("7.500000")
        shot(page, "users")

        open_page(page, "Pricing")
        table = page.get_by_label("Price table (TOML)")
        good = table.input_value()
        table.fill(good + '\n[models."bad-model"]\ninput_per_million = "minus one"\n')
        page.get_by_role("button", name="Save").click()
        expect(page.locator("#page .error")).to_contain_text("'minus one' is not a decimal amount")
        shot(page, "pricing-error")
        table.fill(good)
        page.get_by_role("button", name="Save").click()
        expect(page.get_by_text("Saved")).to_be_visible()

        open_page(page, "Plugins")
        expect(page.get_by_role("cell", name="loaded").first).to_be_visible()
        shot(page, "plugins")
        open_page(page, "Health")
        expect(page.locator('[data-figure="Ready"]')).to_have_text("ready")
        shot(page, "health")
        page.get_by_role("button", name="Sign out").click()
        expect(page.get_by_role("button", name="Sign in")).to_be_visible()

        # The consumer.
        sign_in(page, "carol", "carol's long password")
        expect(page.locator('[data-figure="Balance"]')).to_have_text("7.500000")
        open_page(page, "My keys")
        page.get_by_label("Name", exact=True).fill("playground")
        page.get_by_role("button", name="Create key").click()
        expect(page.get_by_text("New key (shown once")).to_be_visible()
        shot(page, "keys")

        open_page(page, "Playground")
        done = page.locator("#page form p")

        def run(button):
            page.get_by_role("button", name=button).click()
            expect(done).not_to_have_text("", timeout=30000)
            assert done.inner_text() == "Done.", f"the playground said: {done.inner_text()}"

        page.get_by_label("Model").fill(MODEL)
        page.get_by_label("Prompt").fill("Say hello")
        run("Send")
        answer = page.locator("pre.answer").inner_text()
        assert answer.strip(), "the streamed answer is empty"
        shot(page, "playground")

        page.get_by_role("tab", name="Speech").click()
        page.get_by_label("Model", exact=True).fill("tts-1")
        page.get_by_label("Text").fill("Hello from the console.")
        run("Speak")
        expect(page.locator("audio")).to_have_attribute("src", re.compile("^blob:"))

        page.get_by_role("tab", name="Image").click()
        page.get_by_label("Model").fill("dall-e-3")
        page.get_by_label("Prompt").fill("a lighthouse")
        run("Generate")
        expect(page.locator("img.result")).to_have_attribute("src", re.compile("^https://"))

        # A video: the progress bar follows the task's event stream, then the archived clip
        # plays in the page.
        page.get_by_role("tab", name="Video").click()
        page.get_by_label("Model").fill("fixture-video")
        page.get_by_label("Seconds").fill("2")
        page.get_by_label("Prompt").fill("playable")
        page.get_by_role("button", name="Submit").click()
        expect(page.get_by_label("progress")).to_be_visible()
        expect(done).to_have_text("Done.", timeout=60000)
        assert page.get_by_label("progress").get_attribute("value") == "100"
        video = page.locator("video.result")
        page.wait_for_function("() => { const v = document.querySelector('video.result'); return v && v.readyState >= 2; }",
                               timeout=20000)
        assert video.evaluate("v => [v.videoWidth, v.videoHeight]") == [64, 48], "the clip plays"
        shot(page, "playground-video")

        # The call log is written in batches (within a fraction of a second): look again until
        # the call is there.
        open_page(page, "Request log")
        for _ in range(20):
            expect(page.get_by_role("heading", name="Request log")).to_be_visible()
            if page.locator("[data-charge]").count() >= 4:
                break
            page.wait_for_timeout(250)
            page.reload()
        # The chat, the speech, the image and the video submit, each with its charge.
        models = page.locator("tbody tr td:nth-child(2)").all_inner_texts()
        for model in [MODEL, "tts-1", "dall-e-3", "fixture-video"]:
            assert model in models, f"{model} is in the log: {models}"
        charges = [float(c) for c in page.locator("[data-charge]").all_inner_texts()]
        assert sum(1 for c in charges if c > 0) >= 3, f"the calls were charged: {charges}"
        shot(page, "request-log")
        open_page(page, "Account")
        expect(page.locator('[data-figure="Balance"]')).not_to_have_text("7.500000")
        expect(page.get_by_role("cell", name=MODEL, exact=True)).to_be_visible()
        expect(page.locator("svg.chart rect").first).to_be_visible()
        shot(page, "account")
        page.get_by_role("button", name="Sign out").click()

        # The operator's overview counts the call.
        sign_in(page, ADMIN, ADMIN_PASSWORD)
        today = page.locator('[data-figure="Today"]')
        expect(today).not_to_have_text("0")
        expect(page.locator("svg.chart rect").first).to_be_visible()
        shot(page, "overview")

        # The consumer's video task, found by status, user and model, and inspected.
        open_page(page, "Tasks")
        tasks = page.locator("#page [aria-live]")
        expect(tasks.get_by_role("heading")).to_have_text(re.compile(r"^\d+ tasks?$"))
        page.get_by_label("Status", exact=True).select_option("failed")
        page.get_by_label("User", exact=True).select_option(label="carol")
        page.get_by_role("button", name="Filter").click()
        expect(tasks).to_contain_text("No tasks match.")
        page.get_by_label("Status", exact=True).select_option("succeeded")
        page.get_by_label("Model", exact=True).select_option("fixture-video")
        page.get_by_role("button", name="Filter").click()
        expect(tasks.get_by_role("heading")).to_have_text("1 task")
        tasks.get_by_role("button", name="Inspect").click()
        detail = page.locator("[data-task-detail]")
        expect(detail.locator('[data-fact="Status"]')).to_have_text("succeeded")
        expect(detail.locator('[data-fact="Model"]')).to_have_text("fixture-video")
        expect(detail.get_by_role("cell", name="succeeded", exact=True).first).to_be_visible()
        shot(page, "tasks")

        # The request log filtered: the user's errors (none), then one model's calls.
        open_page(page, "Request log")
        expect(page.get_by_role("cell", name=MODEL).first).to_be_visible()
        page.get_by_label("User", exact=True).select_option(label="carol")
        page.get_by_label("Status", exact=True).select_option("errors")
        page.get_by_role("button", name="Filter").click()
        expect(page.get_by_text("No calls match.")).to_be_visible()
        page.get_by_label("Status", exact=True).select_option("")
        page.get_by_label("Model", exact=True).fill("tts-1")
        page.get_by_role("button", name="Filter").click()
        expect(page.get_by_role("cell", name="tts-1", exact=True).first).to_be_visible()
        models = page.locator("tbody tr td:nth-child(2)").all_inner_texts()
        assert models and set(models) == {"tts-1"}, f"only the model asked for: {models}"
        shot(page, "admin-request-log")

        # Signing out ends the session on the gateway: a copy of its token is refused.
        token = next(c["value"] for c in context.cookies() if c["name"] == "tollgate_session")
        page.get_by_role("button", name="Sign out").click()
        expect(page.get_by_role("button", name="Sign in")).to_be_visible()
        copied = context.request.get(f"{BASE}/admin/channels", headers={"authorization": f"Bearer {token}"})
        assert copied.status == 401, f"a signed-out token still works: {copied.status}"

        assert not errors, f"the page reported errors: {errors}"
        browser.close()
    print("console check passed")


if __name__ == "__main__":
    main()
