"""The web inbox in headless Chromium: sign in, filter, open a task, see form errors, complete it.

Screenshots go to ``test-artifacts/task-inbox/`` (git-ignored; CI keeps them as artifacts).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from task_inbox import Settings, create_app
from task_inbox.services import TaskIntake
from wf_platform.plugin import get_platform
from wf_platform.tenancy import TenantId
from wf_platform.testing import serve
from wf_stack import free_port

from .conftest import ARTIFACTS, browser_sign_in, chromium_page, created_message


async def test_a_person_completes_a_task_in_the_browser(settings: Settings, tenant: str) -> None:
    app = create_app(settings)
    async with serve(app, free_port()) as base_url, chromium_page("browser") as page:
        platform = get_platform(app)
        await platform.tenants.status(TenantId(tenant))
        intake = TaskIntake(platform.tenant_db(TenantId(tenant)))
        trip = created_message(tenant, title="Approve the trip", description="Paris, 3 days", priority=70)
        await intake.created(trip)
        await intake.created(
            created_message(tenant, title="Late invoice", due_at=datetime.now(UTC) - timedelta(days=1))
        )
        await intake.created(created_message(tenant, title="Sales only", candidate_groups=["sales"]))

        await browser_sign_in(page, base_url, tenant=tenant, user="ann", groups="finance")
        table = page.get_by_test_id("task-table")
        await table.get_by_role("link", name="Approve the trip").wait_for()
        assert await table.get_by_role("link", name="Late invoice").count() == 1
        assert await table.get_by_role("link", name="Sales only").count() == 0
        assert await page.locator(".overdue-badge").count() == 1
        await page.screenshot(path=str(ARTIFACTS / "01-list.png"), full_page=True)

        await page.get_by_label("Search").fill("trip")
        await page.get_by_role("button", name="Filter").click()
        await page.wait_for_url(re.compile(r".*q=trip.*"))
        assert await table.get_by_role("link", name="Late invoice").count() == 0
        await page.screenshot(path=str(ARTIFACTS / "02-filtered.png"), full_page=True)

        await table.get_by_role("link", name="Approve the trip").click()
        await page.wait_for_url(f"{base_url}/tasks/{trip.task_id}")
        await page.get_by_role("button", name="Claim").click()
        await page.get_by_role("button", name="Unclaim").wait_for()
        assert await page.get_by_test_id("graph-unavailable").count() == 1
        await page.screenshot(path=str(ARTIFACTS / "03-task.png"), full_page=True)

        await page.get_by_label("Amount").fill("5000")
        await page.get_by_label("Category").select_option("travel")
        await page.get_by_role("button", name="Complete").click()
        amount = page.locator('[data-field="amount"]')
        await amount.get_by_text("must be at most 1000").wait_for()
        await page.locator('[data-field="approved"]').get_by_text("is required").wait_for()
        assert await page.get_by_label("Amount").input_value() == "5000"
        await page.screenshot(path=str(ARTIFACTS / "04-invalid.png"), full_page=True)

        await page.get_by_label("Approved").select_option("true")
        await page.get_by_label("Amount").fill("120")
        await page.get_by_label("City").fill("Paris")
        await page.get_by_role("button", name="Complete").click()
        await page.get_by_test_id("flash").wait_for()
        assert await page.get_by_role("link", name="Approve the trip").count() == 0
        assert await page.get_by_role("link", name="Late invoice").count() == 1
        await page.screenshot(path=str(ARTIFACTS / "05-completed.png"), full_page=True)
