/**
 * A search by a param's value, typed as people type it (`customer_id=c-9`), as GET /tasks' `params`
 * filter (a JSON object): the value is a number or a boolean when it reads as one (`n=2`,
 * `vip=true`), text otherwise (`"2"` in quotes is the text 2). The console's Param field and the
 * CLI's `tasks --param` read it so.
 */
export function paramsFilter(text: string | null | undefined): { filter?: string; problem?: string } {
  if (!text) return {};
  const at = text.indexOf('=');
  const name = text.slice(0, at).trim();
  if (at <= 0 || !name) return { problem: 'Search a param as name=value, e.g. customer_id=c-9.' };
  const raw = text.slice(at + 1).trim();
  let value: unknown = raw;
  try {
    const parsed: unknown = JSON.parse(raw);
    if (typeof parsed === 'number' || typeof parsed === 'boolean' || typeof parsed === 'string') value = parsed;
  } catch {
    // Not JSON: the text as typed.
  }
  return { filter: JSON.stringify({ [name]: value }) };
}
