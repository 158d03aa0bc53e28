// E.164 checks as the number is typed. The API makes the final call (it knows
// every country's number lengths); this catches the common slips at once and
// says how to fix them.

const EXAMPLE = "+15551234567";

/**
 * Check a phone number as typed.
 * Returns {ok, message, fix}: `fix` is the E.164 spelling to offer when the
 * number is fine apart from its punctuation (or a leading 00 for +).
 */
export function checkE164(raw) {
  const value = raw.trim();
  if (!value) {
    return { ok: false, empty: true, message: `Enter the number in E.164 form, such as ${EXAMPLE}.` };
  }
  if (/[^\d+\s().\-]/.test(value)) {
    return { ok: false, message: "Use digits only, after a leading + and the country code." };
  }
  let compact = value.replace(/[\s().\-]/g, "");
  if (compact.startsWith("00")) compact = `+${compact.slice(2)}`;
  if (!compact.startsWith("+")) {
    return {
      ok: false,
      message: `Start with + and the country code (+1 for the US and Canada, +44 for the UK), such as ${EXAMPLE}.`,
    };
  }
  const digits = compact.slice(1);
  if (digits.includes("+")) return { ok: false, message: "Only one +, at the very start." };
  if (digits.startsWith("0")) {
    return { ok: false, message: "A country code never starts with 0: + is followed by 1–9." };
  }
  if (digits.length < 7) {
    return {
      ok: false,
      message: `Too short: ${digits.length} digit${digits.length === 1 ? "" : "s"} after the +; a full number has 7 to 15.`,
    };
  }
  if (digits.length > 15) {
    return { ok: false, message: `Too long: ${digits.length} digits after the +; E.164 allows at most 15.` };
  }
  // The one country code common enough to check here: North America's +1 has
  // exactly ten digits after it.
  if (digits.startsWith("1") && digits.length !== 11) {
    return {
      ok: false,
      message: `A +1 number has 10 digits after the +1; this has ${digits.length - 1}.`,
    };
  }
  if (compact !== value) {
    return { ok: false, fix: compact, message: `Write it without spaces or punctuation: ${compact}` };
  }
  return { ok: true, message: "Looks like a full E.164 number." };
}
