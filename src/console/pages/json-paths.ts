import { findNodeAtLocation, type Node, type ParseError, parseTree, printParseErrorCode } from 'jsonc-parser';

/**
 * Where a problem's JSON path (`steps[1].depends_on[0]`, `["odd key"]`, `$`: the API's form,
 * src/lib/errors.ts jsonPath) is in the text of a JSON document, so that the workflow editor can
 * mark it. jsonc-parser gives each value its offset in the text.
 */

export type Segment = string | number;

/** `steps[1].depends_on[0]` -> `['steps', 1, 'depends_on', 0]`; `$` -> `[]`. */
export function pathSegments(path: string): Segment[] {
  const segments: Segment[] = [];
  if (path === '$') return segments;
  let at = 0;
  while (at < path.length) {
    if (path[at] === '.') at += 1;
    if (path[at] === '[') {
      if (path[at + 1] === '"') {
        let end = at + 2;
        while (end < path.length && path[end] !== '"') end += path[end] === '\\' ? 2 : 1;
        segments.push(JSON.parse(path.slice(at + 1, end + 1)) as string);
        at = end + 2;
      } else {
        const end = path.indexOf(']', at);
        segments.push(Number(path.slice(at + 1, end)));
        at = end + 1;
      }
    } else {
      let end = at;
      while (end < path.length && path[end] !== '.' && path[end] !== '[') end += 1;
      segments.push(path.slice(at, end));
      at = end;
    }
  }
  return segments;
}

export interface Located {
  from: number;
  to: number;
  /** 1-based, for the problem list. */
  line: number;
  /** False when the path leads past what the text has (a missing field): the nearest value that exists is marked. */
  exact: boolean;
}

function lineOf(text: string, offset: number): number {
  let line = 1;
  for (let index = 0; index < offset; index += 1) if (text.charCodeAt(index) === 10) line += 1;
  return line;
}

/** A value's range to mark: a scalar whole; an object or array by its key (when it has one) or its opening bracket. */
function markOf(node: Node): { from: number; to: number } {
  if (node.type !== 'object' && node.type !== 'array') return { from: node.offset, to: node.offset + node.length };
  const key = node.parent?.type === 'property' ? node.parent.children?.[0] : undefined;
  return key ? { from: key.offset, to: key.offset + key.length } : { from: node.offset, to: node.offset + 1 };
}

/** The range of `path` in `text`, or of its nearest existing ancestor; undefined when the text is not JSON at all. */
export function locate(text: string, path: string): Located | undefined {
  const root = parseTree(text);
  if (!root) return undefined;
  const segments = pathSegments(path);
  for (let depth = segments.length; depth >= 0; depth -= 1) {
    const node = depth === 0 ? root : findNodeAtLocation(root, segments.slice(0, depth));
    if (!node) continue;
    const range = markOf(node);
    return { ...range, line: lineOf(text, range.from), exact: depth === segments.length };
  }
  return undefined;
}

/** The syntax errors of a JSON text, each with its place; empty when it parses. */
export function syntaxErrors(text: string): { message: string; from: number; to: number; line: number }[] {
  const errors: ParseError[] = [];
  parseTree(text, errors, { allowTrailingComma: false, disallowComments: true });
  return errors.map((error) => ({
    message: `not JSON: ${printParseErrorCode(error.error)
      .replace(/([a-z])([A-Z])/g, '$1 $2')
      .toLowerCase()}`,
    from: error.offset,
    to: error.offset + Math.max(1, error.length),
    line: lineOf(text, error.offset),
  }));
}
