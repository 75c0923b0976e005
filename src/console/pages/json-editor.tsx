import { defaultKeymap, history, historyKeymap } from '@codemirror/commands';
import { json } from '@codemirror/lang-json';
import { bracketMatching, defaultHighlightStyle, syntaxHighlighting } from '@codemirror/language';
import { type Diagnostic, lintGutter, setDiagnostics } from '@codemirror/lint';
import { EditorState } from '@codemirror/state';
import { EditorView, highlightActiveLine, keymap, lineNumbers } from '@codemirror/view';
import { type Ref, useEffect, useImperativeHandle, useRef } from 'react';

/**
 * A JSON editor (CodeMirror 6) that marks problems at their ranges. Its own chunk, loaded with
 * React.lazy by the Workflows page when an editor is first shown: CodeMirror stays out of the
 * first load. Tab is not captured (no indentWithTab), so the keyboard can leave the editor.
 */

export interface EditorProblem {
  from: number;
  to: number;
  message: string;
}

export interface JsonEditorHandle {
  /** Focuses the editor with the range selected and scrolled into view. */
  reveal(from: number, to: number): void;
}

export interface JsonEditorProps {
  value: string;
  onChange: (text: string) => void;
  problems: readonly EditorProblem[];
  /** The editor's accessible name. */
  label: string;
  ref?: Ref<JsonEditorHandle>;
}

export default function JsonEditor({ value, onChange, problems, label, ref }: JsonEditorProps) {
  const host = useRef<HTMLDivElement>(null);
  const view = useRef<EditorView>(undefined);
  const changed = useRef(onChange);
  changed.current = onChange;

  // Made once; later `value`s from outside (another version chosen) replace the text below.
  // biome-ignore lint/correctness/useExhaustiveDependencies: the first value only; later ones are dispatched
  useEffect(() => {
    const editor = new EditorView({
      parent: host.current!,
      state: EditorState.create({
        doc: value,
        extensions: [
          lineNumbers(),
          history(),
          bracketMatching(),
          highlightActiveLine(),
          syntaxHighlighting(defaultHighlightStyle),
          keymap.of([...defaultKeymap, ...historyKeymap]),
          json(),
          lintGutter(),
          EditorView.lineWrapping,
          EditorView.contentAttributes.of({ 'aria-label': label, 'aria-multiline': 'true' }),
          EditorView.updateListener.of((update) => {
            if (update.docChanged) changed.current(update.state.doc.toString());
          }),
        ],
      }),
    });
    view.current = editor;
    return () => editor.destroy();
  }, []);

  useEffect(() => {
    const editor = view.current;
    if (editor && editor.state.doc.toString() !== value) editor.dispatch({ changes: { from: 0, to: editor.state.doc.length, insert: value } });
  }, [value]);

  useEffect(() => {
    const editor = view.current;
    if (!editor) return;
    const length = editor.state.doc.length;
    const diagnostics: Diagnostic[] = problems.map((problem) => {
      const from = Math.min(problem.from, length);
      return { from, to: Math.max(from, Math.min(problem.to, length)), severity: 'error', message: problem.message };
    });
    editor.dispatch(setDiagnostics(editor.state, diagnostics));
  }, [problems]);

  useImperativeHandle(ref, () => ({
    reveal(from, to) {
      const editor = view.current;
      if (!editor) return;
      const length = editor.state.doc.length;
      editor.dispatch({ selection: { anchor: Math.min(from, length), head: Math.min(to, length) }, scrollIntoView: true });
      editor.focus();
    },
  }));

  return <div className="json-editor" ref={host} />;
}
