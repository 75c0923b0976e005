import type { Problem } from '../lib/errors.js';
import type { ApprovalPage } from '../tasks/waits.js';

/**
 * The approval page: plain HTML with a form, no scripts, so it works in any browser and in mail
 * clients' viewers. Every value a task or a definition brings is escaped.
 */

const ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (char) => ESCAPES[char]!);
}

const STYLE = `body{font:16px/1.5 system-ui,sans-serif;max-width:40rem;margin:2rem auto;padding:0 1rem;color:#1b1f24}
h1{font-size:1.4rem}dl{display:grid;grid-template-columns:max-content 1fr;gap:.25rem 1rem}dt{font-weight:600}
dd{margin:0;white-space:pre-wrap;word-break:break-word}label{display:block;margin:.75rem 0 .25rem;font-weight:600}
input[type=text],input[type=number],select,textarea{width:100%;padding:.4rem;font:inherit;box-sizing:border-box}
.actions{margin-top:1.25rem;display:flex;gap:.75rem}button{font:inherit;padding:.5rem 1.25rem;cursor:pointer}
.errors{background:#fff0f0;border:1px solid #d33;padding:.5rem 1rem}.muted{color:#57606a}`;

function layout(title: string, body: string): string {
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><meta name="robots" content="noindex"><title>${escapeHtml(title)}</title><style>${STYLE}</style></head><body>${body}</body></html>`;
}

function shownValue(value: unknown): string {
  return escapeHtml(typeof value === 'string' ? value : JSON.stringify(value, null, 2));
}

type FormField = { type?: string; enum?: unknown[]; title?: string; description?: string; maxLength?: number };

function fieldInput(name: string, field: FormField, required: boolean, value: unknown): string {
  const id = `field-${escapeHtml(name)}`;
  const label = `<label for="${id}">${escapeHtml(field.title ?? name)}${required ? ' *' : ''}</label>`;
  const help = field.description ? `<div class="muted">${escapeHtml(field.description)}</div>` : '';
  const attrs = `id="${id}" name="fields.${escapeHtml(name)}"${required ? ' required' : ''}`;
  const current = value === undefined ? '' : String(value);
  if (Array.isArray(field.enum)) {
    const options = field.enum.map((option) => {
      const text = escapeHtml(String(option));
      return `<option value="${text}"${String(option) === current ? ' selected' : ''}>${text}</option>`;
    });
    return `${label}<select ${attrs}>${required ? '' : '<option value=""></option>'}${options.join('')}</select>${help}`;
  }
  if (field.type === 'boolean')
    return `<label><input type="checkbox" ${attrs.replace(' required', '')} value="true"${current === 'true' ? ' checked' : ''}> ${escapeHtml(field.title ?? name)}</label>${help}`;
  if (field.type === 'number' || field.type === 'integer')
    return `${label}<input type="number" ${attrs}${field.type === 'number' ? ' step="any"' : ''} value="${escapeHtml(current)}">${help}`;
  if ((field.maxLength ?? 1000) > 200) return `${label}<textarea ${attrs} rows="3">${escapeHtml(current)}</textarea>${help}`;
  return `${label}<input type="text" ${attrs} value="${escapeHtml(current)}">${help}`;
}

/** The page of a valid link: what is to be approved, the form, and the two buttons. */
export function approvalForm(
  page: ApprovalPage & { ok: true },
  options: { problems?: Problem[]; values?: Record<string, unknown>; comment?: string } = {},
): string {
  const shown = Object.entries(page.shown);
  const form = page.form as { properties?: Record<string, FormField>; required?: string[] } | undefined;
  const required = new Set(form?.required ?? []);
  const fields = Object.entries(form?.properties ?? {}).map(([name, field]) => fieldInput(name, field, required.has(name), options.values?.[name]));
  const errors = options.problems?.length
    ? `<div class="errors" role="alert"><p>Please correct:</p><ul>${options.problems.map((problem) => `<li>${escapeHtml(problem.path)}: ${escapeHtml(problem.message)}</li>`).join('')}</ul></div>`
    : '';
  return layout(
    `Approval: ${page.stepId}`,
    `<h1>Approval requested: ${escapeHtml(page.stepId)}</h1>
<p class="muted">Task ${escapeHtml(page.taskId)} (${escapeHtml(page.taskType)})${page.approver ? `, for ${escapeHtml(page.approver)}` : ''}. This link works once, until ${escapeHtml(page.expiresAt.toISOString())}.</p>
${shown.length > 0 ? `<dl>${shown.map(([name, value]) => `<dt>${escapeHtml(name)}</dt><dd>${shownValue(value)}</dd>`).join('')}</dl>` : ''}
${errors}
<form method="post">
${page.approver ? '' : '<label for="name">Your name</label><input type="text" id="name" name="name" maxlength="200">'}
${fields.join('\n')}
<label for="comment">Comment</label><textarea id="comment" name="comment" rows="3" maxlength="2000">${escapeHtml(options.comment ?? '')}</textarea>
<div class="actions"><button type="submit" name="decision" value="approved">Approve</button><button type="submit" name="decision" value="rejected">Reject</button></div>
</form>`,
  );
}

/** The page after a decision was recorded. */
export function decidedPage(decision: string): string {
  return layout('Decision recorded', `<h1>Decision recorded: ${escapeHtml(decision)}</h1><p>Thank you. The task goes on; this link no longer works.</p>`);
}

const REFUSALS = {
  malformed: [400, 'This link is not valid', 'The address is incomplete or damaged. Open the link exactly as you received it.'],
  tampered: [403, 'This link is not valid', 'Its signature does not match: it was changed or was never issued by this service.'],
  expired: [410, 'This link has expired', 'The approval is no longer open through this link. Ask for a new request if it is still needed.'],
  decided: [409, 'This approval is closed', 'It was already decided (or the task moved on), so this link no longer works. Nothing was changed.'],
  not_found: [404, 'No such approval', 'The task or its step is gone (it may have expired after the retention period).'],
  unavailable: [503, 'Approval links are off', 'This server makes no approval links (set APPROVAL_SECRET); decide with an API key instead.'],
  refused: [403, 'This decision was refused', "The organisation's policy did not allow it. Nothing was changed."],
  policy_unavailable: [503, 'Please try again', 'The decision could not be checked just now. Nothing was changed: try again in a moment.'],
} as const;

/** The page of a link that cannot be used, with its HTTP status. */
export function refusedPage(problem: keyof typeof REFUSALS): { status: number; html: string } {
  const [status, title, text] = REFUSALS[problem];
  return { status, html: layout(title, `<h1>${escapeHtml(title)}</h1><p>${escapeHtml(text)}</p>`) };
}
