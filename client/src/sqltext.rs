//! Pure decisions of the SQL editor, tested natively: which text a run
//! submits (the selection, else the statement under the cursor), the
//! editor's UTF-16 offsets as Rust byte offsets, where a session's draft is
//! kept, and the tables and columns offered by autocomplete.

use std::collections::BTreeMap;

/// The byte offset of UTF-16 code unit `offset` in `text` (JavaScript's
/// string offsets, which CodeMirror reports), clamped to the text.
pub fn utf16_to_byte(text: &str, offset: usize) -> usize {
    let mut units = 0;
    for (byte, c) in text.char_indices() {
        if units >= offset {
            return byte;
        }
        units += c.len_utf16();
    }
    text.len()
}

/// The `;` that end statements, ignoring those in strings, quoted
/// identifiers and comments (byte offsets).
fn separators(text: &str) -> Vec<usize> {
    let bytes = text.as_bytes();
    let mut found = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            quote @ (b'\'' | b'"') => {
                i += 1;
                while i < bytes.len() {
                    if bytes[i] == quote {
                        // A doubled quote stays inside the literal.
                        if bytes.get(i + 1) == Some(&quote) {
                            i += 1;
                        } else {
                            break;
                        }
                    }
                    i += 1;
                }
            }
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i < bytes.len() && !(bytes[i] == b'*' && bytes.get(i + 1) == Some(&b'/')) {
                    i += 1;
                }
                i += 1;
            }
            b';' => found.push(i),
            _ => {}
        }
        i += 1;
    }
    found
}

/// The statement around byte offset `cursor`: the text between the
/// separators before and after it, trimmed. A cursor after the last
/// statement (on a blank line, after its `;`) means that statement.
pub fn statement_at(text: &str, cursor: usize) -> &str {
    let cursor = cursor.min(text.len());
    let mut bounds = vec![0];
    for separator in separators(text) {
        bounds.push(separator + 1);
    }
    bounds.push(text.len() + 1);
    let segments: Vec<(usize, usize)> = bounds
        .windows(2)
        .map(|w| (w[0], (w[1] - 1).min(text.len())))
        .collect();
    let at = segments
        .iter()
        // A cursor right after a `;` belongs to the statement it ends.
        .position(|&(start, end)| cursor >= start && cursor <= end + 1)
        .unwrap_or(segments.len() - 1);
    // The cursor's statement, else the nearest non-empty one before it.
    segments[..=at]
        .iter()
        .rev()
        .map(|&(start, end)| text[start..end].trim())
        .find(|s| !s.is_empty())
        .unwrap_or("")
}

/// What Ctrl/Cmd+Enter runs: the selection (UTF-16 offsets `from`..`to`)
/// when there is one, else the statement under the cursor.
pub fn text_to_run(text: &str, from: usize, to: usize) -> String {
    let (from, to) = (utf16_to_byte(text, from), utf16_to_byte(text, to));
    let (from, to) = (from.min(to), from.max(to));
    let selected = text[from..to].trim();
    if !selected.is_empty() {
        return selected.to_owned();
    }
    statement_at(text, to).to_owned()
}

/// The editor's text when a session has no draft yet.
pub const DEFAULT_SQL: &str = "SELECT 42";

/// The browser storage key of one session's draft.
pub fn draft_key(session_id: &uuid::Uuid) -> String {
    format!("sextant.draft.{session_id}")
}

/// Tables and their columns offered by autocomplete: the server catalog,
/// then the local engine's tables (which win on a shared name, as the
/// local engine runs offline copies under the server's names).
pub fn completion_schema(
    server: &[(String, Vec<String>)],
    local: &[(String, Vec<String>)],
) -> BTreeMap<String, Vec<String>> {
    let mut schema = BTreeMap::new();
    for (table, columns) in server.iter().chain(local) {
        let entry: &mut Vec<String> = schema.entry(table.clone()).or_default();
        if !columns.is_empty() {
            *entry = columns.clone();
        }
    }
    schema
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_statement_under_the_cursor_runs() {
        let text = "SELECT 1;\nSELECT 2;\n\nSELECT 3";
        assert_eq!(statement_at(text, 0), "SELECT 1");
        assert_eq!(statement_at(text, 12), "SELECT 2");
        assert_eq!(statement_at(text, text.len()), "SELECT 3");
        // Right after a `;`: that statement.
        assert_eq!(statement_at(text, 9), "SELECT 1");
    }

    #[test]
    fn a_cursor_on_trailing_blanks_means_the_last_statement() {
        let text = "SELECT 1;\nSELECT 2;\n\n";
        assert_eq!(statement_at(text, text.len()), "SELECT 2");
    }

    #[test]
    fn semicolons_in_strings_identifiers_and_comments_do_not_split() {
        let text = "SELECT ';' AS \"a;b\" -- x;y\n/* p;q */ FROM t; SELECT 'it''s;'";
        assert_eq!(
            statement_at(text, 3),
            "SELECT ';' AS \"a;b\" -- x;y\n/* p;q */ FROM t"
        );
        assert_eq!(statement_at(text, text.len()), "SELECT 'it''s;'");
    }

    #[test]
    fn a_selection_wins_over_the_statement() {
        let text = "SELECT 1; SELECT 2";
        assert_eq!(text_to_run(text, 10, 18), "SELECT 2");
        assert_eq!(text_to_run(text, 18, 10), "SELECT 2");
        assert_eq!(text_to_run(text, 3, 3), "SELECT 1");
        // An empty (blank) selection is the cursor.
        assert_eq!(text_to_run(text, 9, 10), "SELECT 2");
    }

    #[test]
    fn utf16_offsets_become_byte_offsets() {
        // "é" is 1 UTF-16 unit and 2 bytes; "𝄞" is 2 units and 4 bytes.
        let text = "é𝄞x";
        assert_eq!(utf16_to_byte(text, 0), 0);
        assert_eq!(utf16_to_byte(text, 1), 2);
        assert_eq!(utf16_to_byte(text, 3), 6);
        assert_eq!(utf16_to_byte(text, 99), text.len());
        assert_eq!(text_to_run("SELECT 'é'; SELECT 2", 12, 12), "SELECT 2");
    }

    #[test]
    fn local_columns_win_and_tables_without_columns_stay_listed() {
        let server = vec![("demo".to_owned(), vec!["borough".to_owned()])];
        let local = vec![
            (
                "demo".to_owned(),
                vec!["borough".to_owned(), "fare".to_owned()],
            ),
            ("sales".to_owned(), vec![]),
        ];
        let schema = completion_schema(&server, &local);
        assert_eq!(schema["demo"], vec!["borough", "fare"]);
        assert!(schema["sales"].is_empty());
        let only_server = completion_schema(&server, &[("demo".to_owned(), vec![])]);
        assert_eq!(only_server["demo"], vec!["borough"]);
    }
}
