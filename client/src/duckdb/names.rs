//! Pure naming rules of browser-local data (tested natively):
//! - [`assign`]: the SQL name of every stored file, distinct even when two
//!   files share a stem (`sales.csv` beside `sales.json`) or a local file is
//!   named like an offline copy of a server dataset;
//! - [`referenced`]: which of those names a statement mentions, so only
//!   those are loaded into duckdb-wasm before it runs.

use std::collections::{BTreeMap, BTreeSet};

/// A stored file as the naming rules see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameRequest<'a> {
    /// The file's name in the store.
    pub file_name: &'a str,
    /// Its preferred SQL name (the stem, or the server's dataset name).
    pub preferred: String,
    /// Offline copies of server datasets keep the server's name, so the
    /// same SQL runs on both engines.
    pub offline_copy: bool,
}

/// The extension of `file_name` as an identifier part (`csv`, `json`).
fn extension(file_name: &str) -> String {
    file_name
        .rsplit_once('.')
        .map(|(_, ext)| {
            ext.chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() {
                        c.to_ascii_lowercase()
                    } else {
                        '_'
                    }
                })
                .collect()
        })
        .unwrap_or_default()
}

/// One distinct SQL name per request, in the same order. The result depends
/// only on the set of files, not on their order:
/// 1. offline copies keep their preferred (server) name;
/// 2. a local file keeps its stem when no other file wants it; local files
///    sharing a stem, or whose stem is an offline copy's name, are all named
///    stem + `_` + extension (`sales_csv`, `sales_json`);
/// 3. what still collides gets `_2`, `_3` … in file name order.
///
/// Names compare case-insensitively, as DuckDB's identifiers do.
pub fn assign(requests: &[NameRequest<'_>]) -> Vec<String> {
    let key = |name: &str| name.to_ascii_lowercase();
    let mut wanted: BTreeMap<String, usize> = BTreeMap::new();
    for request in requests {
        *wanted.entry(key(&request.preferred)).or_default() += 1;
    }
    let candidates: Vec<String> = requests
        .iter()
        .map(|request| {
            // Wanted by another file too (an offline copy or a local file)?
            let contested = wanted[&key(&request.preferred)] > 1;
            if request.offline_copy || !contested {
                request.preferred.clone()
            } else {
                format!("{}_{}", request.preferred, extension(request.file_name))
            }
        })
        .collect();
    // Offline copies first, then by file name: a stable order for suffixes.
    let mut order: Vec<usize> = (0..requests.len()).collect();
    order.sort_by(|&a, &b| {
        (!requests[a].offline_copy, requests[a].file_name)
            .cmp(&(!requests[b].offline_copy, requests[b].file_name))
    });
    let mut taken: BTreeSet<String> = BTreeSet::new();
    let mut names = vec![String::new(); requests.len()];
    for i in order {
        let mut name = candidates[i].clone();
        let mut n = 2;
        while taken.contains(&key(&name)) {
            name = format!("{}_{n}", candidates[i]);
            n += 1;
        }
        taken.insert(key(&name));
        names[i] = name;
    }
    names
}

/// The words of `sql` that can name a table: identifiers (unquoted or in
/// double quotes, lower-cased as DuckDB compares them) and the contents of
/// string literals (`FROM 'sales.csv'`), with comments skipped.
fn words(sql: &str) -> BTreeSet<String> {
    let chars: Vec<char> = sql.chars().collect();
    let mut words = BTreeSet::new();
    let mut i = 0;
    // Reads a quoted run from `i` (at the opening quote) with doubled-quote escapes.
    let quoted = |i: &mut usize, quote: char| -> String {
        let mut text = String::new();
        *i += 1;
        while *i < chars.len() {
            if chars[*i] == quote {
                if chars.get(*i + 1) == Some(&quote) {
                    text.push(quote);
                    *i += 2;
                    continue;
                }
                *i += 1;
                break;
            }
            text.push(chars[*i]);
            *i += 1;
        }
        text
    };
    while i < chars.len() {
        let c = chars[i];
        if c == '-' && chars.get(i + 1) == Some(&'-') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && chars.get(i + 1) == Some(&'*') {
            i += 2;
            while i < chars.len() && !(chars[i] == '*' && chars.get(i + 1) == Some(&'/')) {
                i += 1;
            }
            i += 2;
        } else if c == '"' {
            words.insert(quoted(&mut i, '"').to_ascii_lowercase());
        } else if c == '\'' {
            words.insert(quoted(&mut i, '\''));
        } else if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            words.insert(word.to_ascii_lowercase());
        } else {
            i += 1;
        }
    }
    words
}

/// The indexes of the `(sql_name, file_name)` pairs that `sql` mentions,
/// by SQL name (any case, quoted or not) or by file name in a string
/// literal. It errs on the side of loading: a name inside a comment is
/// skipped, but a column that happens to share a table's name loads it.
pub fn referenced(sql: &str, names: &[(&str, &str)]) -> Vec<usize> {
    let words = words(sql);
    names
        .iter()
        .enumerate()
        .filter(|(_, (sql_name, file_name))| {
            words.contains(&sql_name.to_ascii_lowercase()) || words.contains(*file_name)
        })
        .map(|(i, _)| i)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local<'a>(file_name: &'a str, preferred: &str) -> NameRequest<'a> {
        NameRequest {
            file_name,
            preferred: preferred.to_owned(),
            offline_copy: false,
        }
    }

    fn offline<'a>(file_name: &'a str, preferred: &str) -> NameRequest<'a> {
        NameRequest {
            file_name,
            preferred: preferred.to_owned(),
            offline_copy: true,
        }
    }

    #[test]
    fn lone_files_keep_their_stem() {
        let names = assign(&[
            local("trips.csv", "trips"),
            offline("offline/demo.parquet", "demo"),
        ]);
        assert_eq!(names, ["trips", "demo"]);
    }

    #[test]
    fn files_sharing_a_stem_are_named_by_their_extension_whatever_the_order() {
        let a = assign(&[local("sales.csv", "sales"), local("sales.json", "sales")]);
        assert_eq!(a, ["sales_csv", "sales_json"]);
        let b = assign(&[local("sales.json", "sales"), local("sales.csv", "sales")]);
        assert_eq!(b, ["sales_json", "sales_csv"]);
    }

    #[test]
    fn an_offline_copy_keeps_the_server_name_and_the_local_file_yields() {
        let names = assign(&[
            local("demo.csv", "demo"),
            offline("offline/demo.parquet", "demo"),
        ]);
        assert_eq!(names, ["demo_csv", "demo"]);
        // Case-insensitive, like DuckDB.
        let names = assign(&[
            local("Demo.parquet", "demo"),
            offline("offline/Demo.parquet", "Demo"),
        ]);
        assert_eq!(names, ["demo_parquet", "Demo"]);
    }

    #[test]
    fn what_still_collides_is_numbered_in_file_name_order() {
        let names = assign(&[
            local("sales_csv.json", "sales_csv"),
            local("sales.csv", "sales"),
            local("sales.json", "sales"),
        ]);
        // sales.csv then wants sales_csv, the stem of sales_csv.json.
        assert_eq!(names, ["sales_csv_2", "sales_csv", "sales_json"]);
        let names = assign(&[local("a.b.csv", "a_b"), local("a_b.csv", "a_b")]);
        assert_eq!(names, ["a_b_csv", "a_b_csv_2"]);
    }

    #[test]
    fn a_statement_references_tables_by_identifier_or_file_name_not_in_comments() {
        let names = [
            ("sales_csv", "sales.csv"),
            ("sales_json", "sales.json"),
            ("demo", "offline/demo.parquet"),
            ("trips", "trips.parquet"),
        ];
        let sql = "SELECT * FROM Sales_CSV s JOIN \"sales_json\" j USING (id) -- demo\n\
                   /* trips */ UNION ALL SELECT * FROM 'sales.csv'";
        assert_eq!(referenced(sql, &names), [0, 1]);
        assert_eq!(referenced("SELECT 'trips.parquet'", &names), [3]);
        assert_eq!(referenced("SELECT 42", &names), Vec::<usize>::new());
        assert_eq!(referenced("select * from demo;", &names), [2]);
        // A longer word that merely contains a name is not a reference.
        assert_eq!(
            referenced("SELECT * FROM demography", &names),
            Vec::<usize>::new()
        );
    }
}
