"""Placing a call from the form: checks as you type, the API's word, templates, the board."""

from __future__ import annotations

import json
from typing import Any

from switchboard.errors import TwilioServiceError

Console = Any  # the `console` fixture of conftest.py


async def help_or_error(page: Any) -> str:
    error = (await page.text_content("#call-to-error")) or ""
    return error or (await page.text_content("#call-to-help")) or ""


async def test_the_number_is_checked_as_it_is_typed(console: Console) -> None:
    page = await console.open()
    cases = [
        ("5551234567", "Start with + and the country code"),
        ("+0441234567", "never starts with 0"),
        ("+44 12", "Too short"),
        ("+1234567890123456", "Too long"),
        ("+1555123456", "10 digits after the +1; this has 9"),
        ("+1 (555) 123-4567", "without spaces or punctuation: +15551234567"),
        ("+1555abc", "digits only"),
        ("+15551234567", "Looks like a full E.164 number"),
    ]
    for typed, expected in cases:
        await page.fill("#call-to", "")
        await page.type("#call-to", typed)
        assert expected in await help_or_error(page), typed
        invalid = await page.get_attribute("#call-to", "aria-invalid")
        assert (invalid is None) == expected.startswith("Looks like"), typed

    # Punctuation comes with a one-click fix.
    await page.fill("#call-to", "")
    await page.type("#call-to", "00 44 20 7183 8750")
    fix = page.get_by_role("button", name="Use +442071838750")
    await fix.click()
    assert await page.input_value("#call-to") == "+442071838750"
    assert await page.get_attribute("#call-to", "aria-invalid") is None


async def test_submitting_a_bad_form_says_what_is_wrong_and_sends_nothing(console: Console) -> None:
    page = await console.open()
    await page.click("text=Place call")
    assert "Enter the number in E.164 form" in await page.text_content("#call-to-error")
    assert await page.evaluate("document.activeElement.id") == "call-to"
    assert "Write what the agent should do" in await page.text_content("#call-instruction-error")
    await page.fill("#call-to", "+15551234567")
    await page.fill("#call-instruction", "Say hello.")
    await page.click("summary")
    await page.fill("#call-metadata", '["not", "an object"]')
    assert "must be a JSON object" in await page.text_content("#call-metadata-error")
    await page.click("text=Place call")
    assert await page.evaluate("document.activeElement.id") == "call-metadata"
    assert console.control.placed == []


async def test_the_api_has_the_last_word_and_its_message_lands_on_the_field(
    console: Console,
) -> None:
    page = await console.open()
    console.expect_error("422")
    await page.fill("#call-to", "+99912345678")  # plausible shape, no such country
    await page.fill("#call-instruction", "Say hello.")
    await page.click("text=Place call")
    error = page.locator("#call-to-error", has_text="not a phone number")
    await error.wait_for()
    assert await page.get_attribute("#call-to", "aria-invalid") == "true"
    assert console.control.placed == []


async def test_a_placed_call_carries_every_field_and_is_on_the_board_at_once(
    console: Console,
) -> None:
    page = await console.open()
    await page.fill("#call-to", "+15551234567")
    await page.fill("#call-instruction", "Confirm the Monday appointment.")
    await page.select_option("#call-voice", "marin")
    await page.fill("#call-greeting", "Hi, this is Ava.")
    await page.click("summary")
    await page.fill("#call-from", "+15005550006")
    await page.fill("#call-max-duration", "300")
    await page.fill("#call-metadata", '{"customer": "C-1042", "tags": ["vip"]}')
    await page.press("#call-greeting", "Enter")  # keyboard submit

    card = page.locator(".call-card", has_text="+15551234567")
    await card.wait_for()
    # The live call.created event can draw the card before the POST answers; the form is
    # cleared for the next number once it has.
    await page.wait_for_function("() => document.querySelector('#call-to').value === ''")
    (placed,) = console.control.placed
    assert placed.to == "+15551234567"
    assert placed.instruction == "Confirm the Monday appointment."
    assert placed.voice == "marin"
    assert placed.greeting == "Hi, this is Ava."
    assert placed.from_ == "+15005550006"
    assert placed.max_duration_s == 300
    assert placed.metadata == {"customer": "C-1042", "tags": ["vip"]}
    assert await card.count() == 1  # the POST answer and call.created are one card
    assert await card.locator(".badge").text_content() == "Queued"
    assert await page.input_value("#call-instruction") == "Confirm the Monday appointment."

    await console.status(placed.id, "ringing")
    await card.locator(".badge", has_text="Ringing").wait_for()


async def test_a_call_that_cannot_be_placed_says_why_and_is_listed_as_failed(
    console: Console,
) -> None:
    console.control.place_error = TwilioServiceError("the number is not reachable", code=21217)
    page = await console.open()
    console.expect_error("502")
    await page.fill("#call-to", "+15551234567")
    await page.fill("#call-instruction", "Say hello.")
    await page.click("text=Place call")
    await page.locator(".form-error", has_text="not reachable").wait_for()
    failed = page.locator("#recent-calls .call-card", has_text="+15551234567")
    await failed.locator(".badge", has_text="Failed").wait_for()
    assert await page.locator("#active-calls .call-card").count() == 0


async def test_templates_are_saved_in_this_browser_applied_and_deleted(console: Console) -> None:
    page = await console.open()
    assert await page.locator("#template-picker option").all_text_contents() == ["No templates yet"]
    await page.fill("#call-instruction", "You are Ava. Book a cleaning.")
    await page.select_option("#call-voice", "cedar")
    await page.click("text=Save as template")
    await page.fill("#template-name", "Dental booking")
    await page.press("#template-name", "Enter")
    await page.fill("#call-instruction", "You are Bo. Remind about the invoice.")
    await page.click("text=Save as template")
    await page.fill("#template-name", "Invoice reminder")
    await page.click(".inline-form >> text=Save")

    await page.reload()
    await page.locator("#template-picker").wait_for()
    options = await page.locator("#template-picker option").all_text_contents()
    assert options == ["Templates…", "Dental booking", "Invoice reminder"]
    await page.select_option("#template-picker", "Dental booking")
    assert await page.input_value("#call-instruction") == "You are Ava. Book a cleaning."
    assert await page.input_value("#call-voice") == "cedar"

    await page.click("#template-picker ~ button:has-text('Delete')")
    options = await page.locator("#template-picker option").all_text_contents()
    assert options == ["Templates…", "Invoice reminder"]
    stored = json.loads(await page.evaluate("localStorage.getItem('switchboard.templates')"))
    assert [t["name"] for t in stored] == ["Invoice reminder"]
