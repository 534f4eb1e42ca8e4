// The SQL editor: CodeMirror 6 with a DuckDB dialect of @codemirror/lang-sql.
// esbuild bundles it into client/bundles/sql-editor.js (`cargo xtask
// duckdb-bundle`, trunk's pre_build hook); the Rust side
// (client/src/components/sql_editor.rs) imports that file with a dynamic
// import(), so the page renders before the editor's JavaScript arrives.
//
// Rust owns the decisions (which text runs, where the draft is kept): this
// module only reports the document and the selection, and takes a new
// document or schema when Rust has one.

import { EditorState, Compartment, Prec } from "@codemirror/state";
import {
  EditorView,
  keymap,
  lineNumbers,
  highlightActiveLine,
  highlightActiveLineGutter,
  drawSelection,
  placeholder,
} from "@codemirror/view";
import { defaultKeymap, history, historyKeymap, indentWithTab } from "@codemirror/commands";
import {
  syntaxHighlighting,
  defaultHighlightStyle,
  bracketMatching,
  indentOnInput,
} from "@codemirror/language";
import {
  autocompletion,
  completionKeymap,
  closeBrackets,
  closeBracketsKeymap,
} from "@codemirror/autocomplete";
import { sql, SQLDialect } from "@codemirror/lang-sql";
import { KEYWORDS, TYPES, FUNCTIONS, DUCKDB_VERSION } from "./duckdb-dialect.generated.js";

/** DuckDB's SQL: its own keywords, types and functions (see the generated file). */
export const DuckDB = SQLDialect.define({
  keywords: KEYWORDS,
  types: TYPES,
  builtin: FUNCTIONS,
  identifierQuotes: '"',
  caseInsensitiveIdentifiers: true,
  doubleDollarQuotedStrings: true,
  operatorChars: "*+-%<>!=&|~^/:@",
  specialVar: "$?",
});

export const dialectVersion = DUCKDB_VERSION;

function language(schema, defaultTable) {
  return sql({
    dialect: DuckDB,
    schema,
    defaultTable: defaultTable || undefined,
    upperCaseKeywords: true,
  });
}

/**
 * Mounts an editor into `parent`.
 *
 * options: `doc` (initial text), `label` (accessible name), `testid`
 * (data-testid of the editable element), `onChange(text)`, and
 * `onRun(text, selectionFrom, selectionTo)` called by Ctrl/Cmd+Enter and
 * by `run()`. Returns a handle.
 */
export function mountEditor(parent, options) {
  const languageSlot = new Compartment();
  const runKeys = Prec.highest(
    keymap.of([
      {
        key: "Mod-Enter",
        preventDefault: true,
        run: (view) => {
          report(view);
          return true;
        },
      },
    ]),
  );
  function report(view) {
    const main = view.state.selection.main;
    options.onRun(view.state.doc.toString(), main.from, main.to);
  }
  const state = EditorState.create({
    doc: options.doc ?? "",
    extensions: [
      runKeys,
      lineNumbers(),
      highlightActiveLineGutter(),
      highlightActiveLine(),
      history(),
      drawSelection(),
      indentOnInput(),
      bracketMatching(),
      closeBrackets(),
      autocompletion({ icons: false }),
      syntaxHighlighting(defaultHighlightStyle, { fallback: true }),
      placeholder("SELECT …"),
      keymap.of([...closeBracketsKeymap, ...defaultKeymap, ...historyKeymap, ...completionKeymap, indentWithTab]),
      languageSlot.of(language({}, null)),
      EditorView.lineWrapping,
      EditorView.contentAttributes.of({
        "data-testid": options.testid ?? "sql-input",
        "aria-label": options.label ?? "SQL",
        "aria-multiline": "true",
        "data-editor": "codemirror",
      }),
      EditorView.updateListener.of((update) => {
        if (update.docChanged) options.onChange(update.state.doc.toString());
      }),
    ],
  });
  const view = new EditorView({ state, parent });
  return {
    /** Replaces the document unless it already is `text` (no change event). */
    setDoc(text) {
      if (view.state.doc.toString() === text) return;
      view.dispatch({
        changes: { from: 0, to: view.state.doc.length, insert: text },
        selection: { anchor: text.length },
      });
    },
    /** `schema` maps table names to column names; `defaultTable`'s columns complete unqualified. */
    setSchema(schema, defaultTable) {
      view.dispatch({ effects: languageSlot.reconfigure(language(schema, defaultTable)) });
    },
    /** Reports the text and selection to `onRun`, as Ctrl/Cmd+Enter does. */
    run() {
      report(view);
    },
    focus() {
      view.focus();
    },
    destroy() {
      view.destroy();
    },
  };
}
