"""OpenAI's browser quick-start for Realtime over WebRTC, pointed at talkwire
by changing only its base URL. The page comes from another origin (an app's
own server, here an aiohttp app on another port), so CORS is exercised, and
that server mints the ephemeral key with the API key as an app backend would."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from playwright.async_api import Playwright
from support import CONNECT_TIMEOUT_MS, chromium, hears_tone, wait_for

from talkwire.stack import Stack

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]

PAGES = Path(__file__).parent / "pages"
OPENAI_CALLS_URL = "https://api.openai.com/v1/realtime/calls"
HTTP = web.AppKey("http", aiohttp.ClientSession)


def app_backend(stack: Stack) -> web.Application:
    """The app's server: serves the quick-start and mints ephemeral keys."""
    page = (PAGES / "quickstart.html").read_text()
    assert page.count(OPENAI_CALLS_URL) == 1
    page = page.replace(OPENAI_CALLS_URL, stack.signaling_url + "/v1/realtime/calls")

    async def index(_: web.Request) -> web.Response:
        return web.Response(text=page, content_type="text/html")

    async def probe(_: web.Request) -> web.FileResponse:
        return web.FileResponse(PAGES / "probe.js")

    async def token(request: web.Request) -> web.Response:
        async with request.app[HTTP].post(
            stack.signaling_url + "/v1/realtime/client_secrets",
            headers={"Authorization": f"Bearer {stack.config.api_key}"},
            json={"session": {"type": "realtime", "model": "echo"}},
        ) as response:
            return web.Response(
                status=response.status, body=await response.read(), content_type="application/json"
            )

    async def lifetime(app: web.Application) -> AsyncIterator[None]:
        async with aiohttp.ClientSession() as http:
            app[HTTP] = http
            yield

    app = web.Application()
    app.cleanup_ctx.append(lifetime)
    app.router.add_get("/", index)
    app.router.add_get("/probe.js", probe)
    app.router.add_get("/token", token)
    return app


@pytest_asyncio.fixture(loop_scope="module")
async def app_url(stack: Stack) -> AsyncIterator[str]:
    runner = web.AppRunner(app_backend(stack))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}/"
    finally:
        await runner.cleanup()


async def test_openai_quickstart_with_only_the_base_url_changed(
    playwright: Playwright, stack: Stack, app_url: str, tone_mic: Path, tmp_path: Path
) -> None:
    assert not stack.signaling_url.startswith(app_url.rstrip("/"))  # another origin
    async with chromium(playwright, tmp_path / "profile", tone_mic) as context:
        page = await context.new_page()
        await page.goto(app_url)
        await wait_for(
            page,
            "probe.pc && probe.pc.connectionState === 'connected'"
            " && (probe.eventCounts['session.created'] || 0) > 0",
            "the quick-start to connect and receive session.created",
            CONNECT_TIMEOUT_MS,
            name="probe",
        )
        await wait_for(page, hears_tone(name="probe"), "the echoed tone", name="probe")
        assert await page.evaluate("probe.errors") == []

        calls = [r for r in await page.evaluate("probe.responses") if "/realtime/calls" in r["url"]]
        assert [r["status"] for r in calls] == [201]
        location = calls[0]["location"]
        assert location and location.startswith("/v1/realtime/calls/"), calls

        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"{stack.signaling_url}{location}/hangup",
                headers={"Authorization": f"Bearer {stack.config.api_key}"},
            ) as response,
        ):
            assert response.status in (200, 204)
