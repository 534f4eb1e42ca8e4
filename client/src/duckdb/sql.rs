//! The SQL the local engine runs around the user's statement, pure so it is
//! tested natively: `DESCRIBE` for DuckDB's own column type names, and a
//! presentation wrapper that makes DuckDB turn every value the JSON page
//! cannot carry exactly into the same string the server's JSON page uses
//! (decimals and huge integers as text, dates and timestamps as ISO 8601).
//! Rows from the Local and the Server engine then compare equal.

use shared_domain::Column;

/// The statement without surrounding blanks and trailing semicolons, so it
/// can be nested in another statement.
pub fn trim_statement(sql: &str) -> &str {
    let mut text = sql.trim();
    while let Some(rest) = text.strip_suffix(';') {
        text = rest.trim_end();
    }
    text
}

/// `DESCRIBE <statement>`: one row per result column (name, DuckDB type),
/// bound but not executed. DuckDB refuses it for anything but a query.
pub fn describe_sql(sql: &str) -> String {
    format!("DESCRIBE {}", trim_statement(sql))
}

/// How one column of a given DuckDB type is shown in a result page.
fn presentation(column: &str, data_type: &str) -> String {
    let upper = data_type.trim().to_ascii_uppercase();
    let plain = matches!(
        upper.as_str(),
        "BOOLEAN"
            | "TINYINT"
            | "SMALLINT"
            | "INTEGER"
            | "BIGINT"
            | "UTINYINT"
            | "USMALLINT"
            | "UINTEGER"
            | "UBIGINT"
            | "FLOAT"
            | "DOUBLE"
            | "VARCHAR"
    );
    if plain {
        return column.to_owned();
    }
    match upper.as_str() {
        // Arrow's ISO 8601 display, as the server writes it: `T` between
        // date and time, fractional seconds only when present (3 or 6 digits).
        "TIMESTAMP" | "TIMESTAMP_S" | "TIMESTAMP_MS" | "TIMESTAMP_NS" => {
            let ts = format!("CAST({column} AS TIMESTAMP)");
            format!(
                "CASE WHEN epoch_us({ts}) % 1000000 = 0 THEN strftime({ts}, '%Y-%m-%dT%H:%M:%S') \
                 WHEN epoch_us({ts}) % 1000 = 0 THEN strftime({ts}, '%Y-%m-%dT%H:%M:%S.%g') \
                 ELSE strftime({ts}, '%Y-%m-%dT%H:%M:%S.%f') END"
            )
        }
        // DECIMAL(p,s), HUGEINT, UHUGEINT, DATE, TIME, INTERVAL, UUID, ENUM,
        // BLOB and nested types: DuckDB's text form (exact for numbers, ISO
        // for DATE and TIME).
        _ => format!("CAST({column} AS VARCHAR)"),
    }
}

/// Wraps `sql` so each column comes out as [`presentation`] says, in the
/// same order (columns are renamed positionally, so duplicate or odd names
/// cannot clash).
pub fn presentation_sql(sql: &str, columns: &[Column]) -> String {
    if columns.is_empty() {
        return trim_statement(sql).to_owned();
    }
    let aliases: Vec<String> = (0..columns.len()).map(|i| format!("c{i}")).collect();
    let select: Vec<String> = columns
        .iter()
        .zip(&aliases)
        .map(|(column, alias)| format!("{} AS {alias}", presentation(alias, &column.data_type)))
        .collect();
    format!(
        "SELECT {} FROM ({}\n) AS sextant_q({})",
        select.join(", "),
        trim_statement(sql),
        aliases.join(", ")
    )
}

/// Wraps `sql` for a Parquet export of its whole result: every column keeps
/// its name and DuckDB type, except INTERVAL, which becomes text (Arrow JS
/// writes month-day-nano intervals that parquet-wasm's reader refuses, and
/// Parquet has no exact equivalent).
pub fn parquet_export_sql(sql: &str, columns: &[Column]) -> String {
    if columns.is_empty() {
        return trim_statement(sql).to_owned();
    }
    let aliases: Vec<String> = (0..columns.len()).map(|i| format!("c{i}")).collect();
    let select: Vec<String> = columns
        .iter()
        .zip(&aliases)
        .map(|(column, alias)| {
            let value = if column.data_type.trim().eq_ignore_ascii_case("INTERVAL") {
                format!("CAST({alias} AS VARCHAR)")
            } else {
                alias.clone()
            };
            format!("{value} AS {}", quote_identifier(&column.name))
        })
        .collect();
    format!(
        "SELECT {} FROM ({}\n) AS sextant_q({})",
        select.join(", "),
        trim_statement(sql),
        aliases.join(", ")
    )
}

/// An SQL identifier, quoted for DuckDB.
pub fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// An SQL string literal.
pub fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailing_semicolons_and_blanks_go() {
        assert_eq!(trim_statement("  SELECT 1 ;; \n"), "SELECT 1");
        assert_eq!(describe_sql("SELECT 1;"), "DESCRIBE SELECT 1");
    }

    #[test]
    fn plain_types_pass_through_and_exact_ones_become_text() {
        let columns = vec![
            Column::new("n", "BIGINT"),
            Column::new("amount", "DECIMAL(10,2)"),
            Column::new("day", "DATE"),
            Column::new("at", "TIMESTAMP"),
        ];
        let sql = presentation_sql("SELECT * FROM t ORDER BY 1;", &columns);
        assert!(sql.starts_with(
            "SELECT c0 AS c0, CAST(c1 AS VARCHAR) AS c1, CAST(c2 AS VARCHAR) AS c2, CASE WHEN"
        ));
        assert!(sql.ends_with("FROM (SELECT * FROM t ORDER BY 1\n) AS sextant_q(c0, c1, c2, c3)"));
    }

    #[test]
    fn no_columns_leaves_the_statement_alone() {
        assert_eq!(presentation_sql("SELECT 1;", &[]), "SELECT 1");
    }

    #[test]
    fn parquet_exports_keep_names_and_types_but_intervals_become_text() {
        let columns = vec![
            Column::new("n", "BIGINT"),
            Column::new("my \"gap\"", "INTERVAL"),
        ];
        assert_eq!(
            parquet_export_sql("SELECT 1, INTERVAL 1 DAY;", &columns),
            "SELECT c0 AS \"n\", CAST(c1 AS VARCHAR) AS \"my \"\"gap\"\"\" \
             FROM (SELECT 1, INTERVAL 1 DAY\n) AS sextant_q(c0, c1)"
        );
    }

    #[test]
    fn quoting_doubles_quotes() {
        assert_eq!(quote_identifier("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
    }
}
