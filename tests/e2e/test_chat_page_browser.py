"""The chat page at ``/`` in a real headless browser (Debian's chromium driven by Playwright
for Python, nothing downloaded at test time) against daphne and a Celery worker on the real
stack, with the offline ``local`` agent: register, send "add a task to buy milk", watch the
answer stream in with its tool call, lose the connection and get back exactly what was
missed, reload and find the conversation again. A phone-width screenshot is saved under
the test's tmp dir (CI keeps it as an artifact).

In CI a missing chromium fails the test (``.ci/run`` installs it); elsewhere it skips."""

import os
import re
import shutil
import uuid

import httpx
import pytest

from tests.e2e.conftest import wait_for

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
PHONE = {"width": 390, "height": 844}
PASSWORD = "analytical-engine-1843"
TIMEOUT_MS = 20_000


@pytest.fixture
def chromium(monkeypatch):
    if not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)):
        message = f"chromium not found at {CHROMIUM}: apt-get install -y chromium"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    # Playwright's sync API runs an event loop in this thread; the test's own ORM calls
    # (pytest-django's flush at teardown) are sync code that only looks async to Django.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def local_server(stack):
    """daphne and a worker answering with the offline task assistant."""
    stack.env["AGENT_PROVIDER"] = "local"
    return stack.start_all()


def test_register_chat_stream_drop_resume_and_reload_in_a_browser(local_server, chromium, tmp_path):
    from playwright.sync_api import expect

    base = local_server.base_url
    email = f"page-{uuid.uuid4().hex[:8]}@example.com"
    page = chromium.new_page(viewport=PHONE)
    page.set_default_timeout(TIMEOUT_MS)
    frames: list[str] = []
    sockets = []  # the page's WebSocket routes, so the test can cut one

    def through(route):
        server = route.connect_to_server()
        sockets.append((route, server))

    page.route_web_socket(re.compile(r".*/ws/v1/conversations/.*"), through)
    page.on("websocket", lambda ws: ws.on("framereceived", lambda payload: frames.append(str(payload))))

    # Register.
    page.goto(base + "/")
    page.get_by_label("Your name").fill("Ada")
    page.get_by_label("Organisation").fill("Analytical Engines")
    page.get_by_label("Email", exact=True).nth(1).fill(email)
    page.get_by_label("Password (at least 8 characters)").fill(PASSWORD)
    page.get_by_role("button", name="Register").click()
    expect(page.locator("#session")).to_have_text(f"Signed in as {email}")

    # Send, and watch the answer stream in with its tool call.
    page.get_by_role("textbox", name="Message").fill("add a task to buy milk")
    page.get_by_role("textbox", name="Message").press("Enter")
    answer = page.locator(".msg.assistant:not(.streaming)").first
    expect(answer).to_contain_text("buy milk")
    expect(answer.locator(".tools")).to_contain_text("add_task(")
    expect(page.locator(".msg.user")).to_have_count(1)
    assert any('"message.delta"' in f for f in frames), "the answer was not streamed"
    assert any('"tool.call"' in f for f in frames)
    expect(page.locator("#connection")).to_have_text("Connected")
    page.screenshot(path=str(tmp_path / "chat-phone.png"), full_page=True)

    # The connection drops; meanwhile another turn happens (posted over REST); the page
    # reconnects and shows what it missed, once.
    conversation_id = int(page.locator("#conversations button").first.get_attribute("data-id"))
    route, server = sockets[-1]
    route.close(code=1001, reason="network drop")
    server.close()
    expect(page.locator("#connection")).to_contain_text("reconnecting")
    token = httpx.post(
        f"{base}/api/v1/auth/token", json={"email": email, "password": PASSWORD}, timeout=10, trust_env=False
    ).json()["access"]
    headers = {"Authorization": f"Bearer {token}"}
    sent = httpx.post(
        f"{base}/api/v1/conversations/{conversation_id}/messages",
        json={"content": "what are my tasks"},
        headers=headers,
        timeout=10,
        trust_env=False,
    )
    assert sent.status_code == 202, sent.text
    expect(page.locator("#connection")).to_have_text("Connected")
    expect(page.locator(".msg.user")).to_have_count(2)
    expect(page.locator(".msg.assistant:not(.streaming)")).to_have_count(2)

    def stored_seqs():
        response = httpx.get(
            f"{base}/api/v1/conversations/{conversation_id}/messages", headers=headers, timeout=10, trust_env=False
        )
        return [m["seq"] for m in response.json()["results"]]

    seqs = wait_for(lambda: (s := stored_seqs()) and len(s) == 4 and s, timeout=20, what="four stored messages")
    shown = page.locator("#log .msg").evaluate_all("els => els.map(e => Number(e.dataset.seq))")
    assert shown == seqs == [1, 2, 3, 4]  # no gap, no repeat, in order

    # Reload: the session and the conversation are still there.
    page.reload()
    expect(page.locator("#session")).to_have_text(f"Signed in as {email}")
    expect(page.locator("#conversations button")).to_have_count(1)
    expect(page.locator("#conversations button").first).to_contain_text("add a task to buy milk")
    expect(page.locator("#log .msg")).to_have_count(4)
    expect(page.locator(".msg.assistant").first.locator(".tools")).to_contain_text("add_task(")
    page.screenshot(path=str(tmp_path / "chat-phone-reloaded.png"), full_page=True)
    assert (tmp_path / "chat-phone.png").stat().st_size > 0

    # The session is revoked elsewhere (a logout with its refresh token): a reload says the
    # session ended and asks to sign in; signing in again reopens the conversation.
    refresh = page.evaluate("localStorage.getItem('chat.refresh')")
    revoked = httpx.post(
        f"{base}/api/v1/auth/logout", json={"refresh": refresh}, headers=headers, timeout=10, trust_env=False
    )
    assert revoked.status_code == 204, revoked.text
    page.reload()
    expect(page.locator("#auth-notice")).to_have_text("Your session has ended. Please sign in again.")
    page.locator("#sign-in-email").fill(email)
    page.locator("#sign-in-password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#chat-title")).to_have_text("add a task to buy milk")
    expect(page.locator("#log .msg")).to_have_count(4)

    # Signing out ends the session for good: a reload asks to sign in.
    page.get_by_role("button", name="Sign out").click()
    expect(page.locator("#auth-notice")).to_have_text("You signed out.")
    page.reload()
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    page.close()


def test_refused_sockets_do_not_make_the_page_reconnect_in_a_loop(stack, chromium):
    """The server accepts a refused socket only to close it with its code, so the page sees
    an open before every refusal. Over the per-user socket cap (4409) a second tab says why
    and stops (it reconnects when seen again, once a socket is free); a token the server
    keeps refusing (4401) is retried a bounded number of times, never in a tight loop."""
    from playwright.sync_api import expect

    stack.env["AGENT_PROVIDER"] = "local"
    stack.env["REALTIME_MAX_SOCKETS_PER_USER"] = "1"
    base = stack.start_daphne() and stack.base_url
    email = f"cap-{uuid.uuid4().hex[:8]}@example.com"
    context = chromium.new_context(viewport=PHONE)
    first = context.new_page()
    first.set_default_timeout(TIMEOUT_MS)
    first.goto(base + "/")
    first.get_by_label("Your name").fill("Grace")
    first.get_by_label("Organisation").fill("Compilers")
    first.get_by_label("Email", exact=True).nth(1).fill(email)
    first.get_by_label("Password (at least 8 characters)").fill(PASSWORD)
    first.get_by_role("button", name="Register").click()
    first.get_by_role("textbox", name="Message").fill("hello")
    first.get_by_role("textbox", name="Message").press("Enter")
    expect(first.locator(".msg.user")).to_have_count(1)
    expect(first.locator("#connection")).to_have_text("Connected")

    # A second tab of the same session opens the same conversation: refused with 4409.
    second = context.new_page()
    second.set_default_timeout(TIMEOUT_MS)
    attempts: list[str] = []
    second.on("websocket", lambda ws: attempts.append(ws.url))
    second.goto(base + "/")
    expect(second.locator("#connection")).to_contain_text("too many open windows")
    second.wait_for_timeout(3_000)
    assert len(attempts) == 1, attempts  # no reconnecting into the same refusal
    expect(second.locator("#connection")).to_contain_text("too many open windows")

    # The first tab closes; the second, seen again, connects.
    first.close()
    second.wait_for_timeout(500)
    second.evaluate("document.dispatchEvent(new Event('visibilitychange'))")
    expect(second.locator("#connection")).to_have_text("Connected")
    assert len(attempts) == 2, attempts
    second.close()

    # A server that keeps refusing the token (4401): a forced refresh, then backoff.
    third = context.new_page()
    third.set_default_timeout(TIMEOUT_MS)
    routes: list = []  # mocked sockets: open (as the server accepts them), then closed 4401

    def hold(route):
        routes.append(route)

    third.route_web_socket(re.compile(r".*/ws/v1/conversations/.*"), hold)
    third.goto(base + "/")
    closed = 0
    for _ in range(60):  # 3 s
        third.wait_for_timeout(50)
        for route in routes[closed:]:
            route.close(code=4401, reason="unauthenticated")
        closed = len(routes)
    assert 2 <= len(routes) <= 4, len(routes)
    expect(third.locator("#connection")).to_contain_text("reconnecting")
    context.close()
