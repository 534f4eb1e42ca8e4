//! The result grid's pure decisions, tested natively: how a view of a whole
//! result (sort, filters) is asked of the server (the structured result
//! API's query string) or of duckdb-wasm (SQL around the query), how cells
//! are shown (numbers aligned and grouped, `NULL` apart), and which rows a
//! scrolled viewport shows (virtual scrolling).

use serde_json::Value;

use crate::duckdb::sql::{quote_identifier, quote_literal, trim_statement};

/// A comparison of the structured result API (`filter=col:op:value`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Contains,
    IsNull,
    NotNull,
}

impl FilterOp {
    pub const ALL: [FilterOp; 9] = [
        FilterOp::Eq,
        FilterOp::Ne,
        FilterOp::Lt,
        FilterOp::Le,
        FilterOp::Gt,
        FilterOp::Ge,
        FilterOp::Contains,
        FilterOp::IsNull,
        FilterOp::NotNull,
    ];

    /// The API's name (`eq`, `contains`, …).
    pub fn code(self) -> &'static str {
        match self {
            FilterOp::Eq => "eq",
            FilterOp::Ne => "ne",
            FilterOp::Lt => "lt",
            FilterOp::Le => "le",
            FilterOp::Gt => "gt",
            FilterOp::Ge => "ge",
            FilterOp::Contains => "contains",
            FilterOp::IsNull => "is_null",
            FilterOp::NotNull => "not_null",
        }
    }

    /// How the UI writes it.
    pub fn symbol(self) -> &'static str {
        match self {
            FilterOp::Eq => "=",
            FilterOp::Ne => "≠",
            FilterOp::Lt => "<",
            FilterOp::Le => "≤",
            FilterOp::Gt => ">",
            FilterOp::Ge => "≥",
            FilterOp::Contains => "contains",
            FilterOp::IsNull => "is NULL",
            FilterOp::NotNull => "is not NULL",
        }
    }

    pub fn parse(code: &str) -> Option<FilterOp> {
        Self::ALL.into_iter().find(|op| op.code() == code)
    }

    /// Whether it compares with a value (`is_null` does not).
    pub fn takes_value(self) -> bool {
        !matches!(self, FilterOp::IsNull | FilterOp::NotNull)
    }
}

/// One filter on one column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    pub column: String,
    pub op: FilterOp,
    pub value: String,
}

impl Filter {
    /// As the UI shows it: `fare > 10`.
    pub fn label(&self) -> String {
        if self.op.takes_value() {
            format!("{} {} {}", self.column, self.op.symbol(), self.value)
        } else {
            format!("{} {}", self.column, self.op.symbol())
        }
    }
}

/// The sort column and direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sort {
    pub column: String,
    pub descending: bool,
}

/// A view of a whole result: sorted and filtered by the engine that ran it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GridView {
    pub sort: Option<Sort>,
    pub filters: Vec<Filter>,
}

impl GridView {
    /// The result as it came (no sort, no filter).
    pub fn is_plain(&self) -> bool {
        self.sort.is_none() && self.filters.is_empty()
    }

    /// The next sort when the header of `column` is clicked: ascending,
    /// then descending, then none.
    pub fn cycle_sort(&self, column: &str) -> Option<Sort> {
        match &self.sort {
            Some(sort) if sort.column == column && !sort.descending => Some(Sort {
                column: column.to_owned(),
                descending: true,
            }),
            Some(sort) if sort.column == column => None,
            _ => Some(Sort {
                column: column.to_owned(),
                descending: false,
            }),
        }
    }
}

/// `text` percent-encoded for a URL query.
pub fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(byte as char)
            }
            other => out.push_str(&format!("%{other:02X}")),
        }
    }
    out
}

/// The structured result API's parameters for `view` (none for a plain view,
/// so the plain page request stays what it always was): `&sort=col:desc&filter=col:op:value`.
pub fn server_params(view: &GridView) -> String {
    let mut params = String::new();
    if let Some(sort) = &view.sort {
        let direction = if sort.descending { "desc" } else { "asc" };
        params.push_str(&format!(
            "&sort={}",
            encode(&format!("{}:{direction}", sort.column))
        ));
    }
    for filter in &view.filters {
        let value = if filter.op.takes_value() {
            filter.value.as_str()
        } else {
            ""
        };
        params.push_str(&format!(
            "&filter={}",
            encode(&format!("{}:{}:{value}", filter.column, filter.op.code()))
        ));
    }
    params
}

fn condition(filter: &Filter) -> String {
    let column = quote_identifier(&filter.column);
    let value = quote_literal(&filter.value);
    match filter.op {
        // A text literal compared with a typed column is cast to its type by DuckDB.
        FilterOp::Eq => format!("{column} = {value}"),
        FilterOp::Ne => format!("{column} <> {value}"),
        FilterOp::Lt => format!("{column} < {value}"),
        FilterOp::Le => format!("{column} <= {value}"),
        FilterOp::Gt => format!("{column} > {value}"),
        FilterOp::Ge => format!("{column} >= {value}"),
        FilterOp::Contains => {
            format!("contains(lower(CAST({column} AS VARCHAR)), lower({value}))")
        }
        FilterOp::IsNull => format!("{column} IS NULL"),
        FilterOp::NotNull => format!("{column} IS NOT NULL"),
    }
}

/// The WHERE clause of `view` (empty without filters).
fn where_clause(view: &GridView) -> String {
    if view.filters.is_empty() {
        return String::new();
    }
    let conditions: Vec<String> = view.filters.iter().map(condition).collect();
    format!(" WHERE {}", conditions.join(" AND "))
}

/// The local engine's SQL for `view` of the result of `sql`: the query
/// again, filtered and sorted in duckdb-wasm over all its rows (NULLs last,
/// as DuckDB orders by default).
pub fn local_sql(sql: &str, view: &GridView) -> String {
    let order = match &view.sort {
        Some(sort) => format!(
            " ORDER BY {} {}",
            quote_identifier(&sort.column),
            if sort.descending { "DESC" } else { "ASC" }
        ),
        None => String::new(),
    };
    format!(
        "SELECT * FROM ({}\n) AS sextant_view{}{order}",
        trim_statement(sql),
        where_clause(view)
    )
}

/// The local engine's profile of `column` over the rows of `view`: rows,
/// nulls, distinct values, min and max (as text).
pub fn local_profile_sql(sql: &str, view: &GridView, column: &str) -> String {
    let c = quote_identifier(column);
    format!(
        "SELECT count(*) AS rows, count(*) - count({c}) AS nulls, count(DISTINCT {c}) AS distinct_values, \
         CAST(min({c}) AS VARCHAR) AS min, CAST(max({c}) AS VARCHAR) AS max \
         FROM ({}\n) AS sextant_view{}",
        trim_statement(sql),
        where_clause(view)
    )
}

/// Whether a DuckDB type is a number (right-aligned, grouped digits).
pub fn is_numeric_type(data_type: &str) -> bool {
    let upper = data_type.trim().to_ascii_uppercase();
    upper.starts_with("DECIMAL")
        || upper.starts_with("NUMERIC")
        || matches!(
            upper.as_str(),
            "TINYINT"
                | "SMALLINT"
                | "INTEGER"
                | "BIGINT"
                | "HUGEINT"
                | "UTINYINT"
                | "USMALLINT"
                | "UINTEGER"
                | "UBIGINT"
                | "UHUGEINT"
                | "FLOAT"
                | "DOUBLE"
                | "REAL"
                | "INT"
        )
}

/// `1234567.5` as `1,234,567.5`: the integer part grouped by thousands, the
/// rest as it was (nothing rounded). Text that is not a plain number stays.
pub fn group_digits(number: &str) -> String {
    let (sign, rest) = match number.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", number),
    };
    let (int, frac) = match rest.split_once('.') {
        Some((int, frac)) => (int, Some(frac)),
        None => (rest, None),
    };
    if int.is_empty() || !int.bytes().all(|b| b.is_ascii_digit()) {
        return number.to_owned();
    }
    let mut grouped = String::with_capacity(int.len() + int.len() / 3);
    for (i, digit) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    match frac {
        Some(frac) => format!("{sign}{grouped}.{frac}"),
        None => format!("{sign}{grouped}"),
    }
}

/// How a cell is shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cell {
    Null,
    Number(String),
    Text(String),
}

/// `value` of a column of `data_type`, for display.
pub fn cell(value: &Value, numeric: bool) -> Cell {
    match value {
        Value::Null => Cell::Null,
        Value::Number(n) => Cell::Number(group_digits(&n.to_string())),
        // Exact numbers (DECIMAL, HUGEINT) arrive as text.
        Value::String(s) if numeric => Cell::Number(group_digits(s)),
        Value::String(s) => Cell::Text(s.clone()),
        Value::Bool(b) => Cell::Text(b.to_string()),
        other => Cell::Text(other.to_string()),
    }
}

/// A cell ready to render, formatted once when its block of rows arrives
/// (scrolling back and forth never formats it again).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShownCell {
    /// CSS class: `"null"`, `"numeric"` or none.
    pub class: &'static str,
    /// What the cell shows.
    pub text: String,
    /// The exact value (`data-value`; NULL is `"NULL"`).
    pub raw: String,
    /// The tooltip (the exact number, or the whole text; none for NULL).
    pub title: Option<String>,
}

/// `value` of a column (`numeric` or not) as its cell shows it.
pub fn shown_cell(value: &Value, numeric: bool) -> ShownCell {
    let raw = match value {
        Value::Null => "NULL".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    match cell(value, numeric) {
        Cell::Null => ShownCell {
            class: "null",
            text: "NULL".to_owned(),
            raw,
            title: None,
        },
        Cell::Number(text) => ShownCell {
            class: "numeric",
            text,
            title: Some(raw.clone()),
            raw,
        },
        Cell::Text(text) => ShownCell {
            class: "",
            title: Some(text.clone()),
            text,
            raw,
        },
    }
}

/// The rows a viewport shows: `[start, end)` of `total` rows of `row_height`
/// pixels, scrolled to `scroll_top`, `height` tall, with `overscan` extra
/// rows above and below so fast scrolling does not show blanks.
pub fn visible_rows(
    scroll_top: f64,
    height: f64,
    row_height: f64,
    total: usize,
    overscan: usize,
) -> (usize, usize) {
    if total == 0 || row_height <= 0.0 {
        return (0, 0);
    }
    let first = (scroll_top.max(0.0) / row_height).floor() as usize;
    let count = (height.max(0.0) / row_height).ceil() as usize + 1;
    let start = first.saturating_sub(overscan).min(total);
    let end = (first + count + overscan).min(total);
    (start, end.max(start))
}

/// Rows fetched at once while scrolling.
pub const BLOCK_ROWS: usize = 500;

/// The blocks (indexes) needed for rows `[start, end)`.
pub fn blocks_for(start: usize, end: usize) -> std::ops::Range<usize> {
    if end <= start {
        return 0..0;
    }
    start / BLOCK_ROWS..(end - 1) / BLOCK_ROWS + 1
}

/// Rows ahead of (and behind) the viewport whose blocks are fetched
/// already, so scrolling rarely shows a row still loading.
pub const LOOKAHEAD_ROWS: usize = 100;

/// The blocks to hold for rows `[start, end)` in view of `total` rows: the
/// ones in view and those within [`LOOKAHEAD_ROWS`] of it.
pub fn blocks_wanted(start: usize, end: usize, total: usize) -> std::ops::Range<usize> {
    if end <= start {
        return 0..0;
    }
    blocks_for(
        start.saturating_sub(LOOKAHEAD_ROWS),
        (end + LOOKAHEAD_ROWS).min(total.max(end)),
    )
}

/// `rows` as CSV (RFC 4180: fields with a comma, quote or line break are
/// quoted, quotes doubled; NULL is an empty field).
pub fn to_csv(columns: &[String], rows: &[Vec<Value>]) -> String {
    fn field(text: &str) -> String {
        if text.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", text.replace('"', "\"\""))
        } else {
            text.to_owned()
        }
    }
    let mut out = String::new();
    let header: Vec<String> = columns.iter().map(|c| field(c)).collect();
    out.push_str(&header.join(","));
    out.push_str("\r\n");
    for row in rows {
        let fields: Vec<String> = row
            .iter()
            .map(|v| match v {
                Value::Null => String::new(),
                Value::String(s) => field(s),
                other => field(&other.to_string()),
            })
            .collect();
        out.push_str(&fields.join(","));
        out.push_str("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(sort: Option<(&str, bool)>, filters: &[(&str, FilterOp, &str)]) -> GridView {
        GridView {
            sort: sort.map(|(c, d)| Sort {
                column: c.into(),
                descending: d,
            }),
            filters: filters
                .iter()
                .map(|(c, op, v)| Filter {
                    column: (*c).into(),
                    op: *op,
                    value: (*v).into(),
                })
                .collect(),
        }
    }

    #[test]
    fn server_parameters_follow_the_structured_result_api() {
        assert_eq!(server_params(&GridView::default()), "");
        let v = view(
            Some(("fare", true)),
            &[
                ("borough", FilterOp::Eq, "Queens & co"),
                ("tip", FilterOp::IsNull, "ignored"),
            ],
        );
        assert_eq!(
            server_params(&v),
            "&sort=fare%3Adesc&filter=borough%3Aeq%3AQueens%20%26%20co&filter=tip%3Ais_null%3A"
        );
    }

    #[test]
    fn local_sql_wraps_the_query_with_quoted_names_and_literals() {
        let v = view(
            Some(("fa\"re", false)),
            &[
                ("b", FilterOp::Contains, "O'Hare"),
                ("n", FilterOp::Ge, "3"),
            ],
        );
        assert_eq!(
            local_sql("SELECT * FROM t;", &v),
            "SELECT * FROM (SELECT * FROM t\n) AS sextant_view WHERE \
             contains(lower(CAST(\"b\" AS VARCHAR)), lower('O''Hare')) AND \"n\" >= '3' \
             ORDER BY \"fa\"\"re\" ASC"
        );
        assert_eq!(
            local_sql("SELECT 1", &GridView::default()),
            "SELECT * FROM (SELECT 1\n) AS sextant_view"
        );
        let profile = local_profile_sql("SELECT 1 AS x", &GridView::default(), "x");
        assert!(profile.contains("count(DISTINCT \"x\")"), "{profile}");
    }

    #[test]
    fn header_clicks_cycle_ascending_descending_none() {
        let mut v = GridView::default();
        v.sort = v.cycle_sort("a");
        assert_eq!(v.sort.as_ref().map(|s| s.descending), Some(false));
        v.sort = v.cycle_sort("a");
        assert_eq!(v.sort.as_ref().map(|s| s.descending), Some(true));
        v.sort = v.cycle_sort("a");
        assert!(v.sort.is_none());
        v.sort = v.cycle_sort("b");
        v.sort = v.cycle_sort("a");
        assert_eq!(v.sort.map(|s| s.column), Some("a".to_owned()));
    }

    #[test]
    fn digits_are_grouped_without_rounding() {
        assert_eq!(group_digits("1234567"), "1,234,567");
        assert_eq!(group_digits("-1234.5678"), "-1,234.5678");
        assert_eq!(group_digits("999"), "999");
        assert_eq!(group_digits("1e21"), "1e21");
        assert_eq!(group_digits("NaN"), "NaN");
        assert_eq!(
            cell(&serde_json::json!(12345.25), true),
            Cell::Number("12,345.25".into())
        );
        assert_eq!(
            cell(&Value::String("1000.50".into()), true),
            Cell::Number("1,000.50".into())
        );
        assert_eq!(
            cell(&Value::String("NULL".into()), false),
            Cell::Text("NULL".into())
        );
        assert_eq!(cell(&Value::Null, true), Cell::Null);
        assert!(is_numeric_type("DECIMAL(10,2)") && !is_numeric_type("VARCHAR"));
    }

    #[test]
    fn csv_quotes_what_needs_quoting_and_leaves_null_empty() {
        let rows = vec![vec![
            serde_json::json!("a,b"),
            serde_json::json!("say \"hi\""),
            Value::Null,
            serde_json::json!(1.5),
        ]];
        let columns = [
            "x".to_owned(),
            "y".to_owned(),
            "z".to_owned(),
            "n".to_owned(),
        ];
        assert_eq!(
            to_csv(&columns, &rows),
            "x,y,z,n\r\n\"a,b\",\"say \"\"hi\"\"\",,1.5\r\n"
        );
    }

    #[test]
    fn the_viewport_shows_its_rows_plus_overscan() {
        assert_eq!(visible_rows(0.0, 100.0, 25.0, 10_000, 5), (0, 10));
        assert_eq!(visible_rows(2_500.0, 100.0, 25.0, 10_000, 5), (95, 110));
        assert_eq!(visible_rows(1e9, 100.0, 25.0, 10, 5), (10, 10));
        assert_eq!(visible_rows(0.0, 100.0, 25.0, 0, 5), (0, 0));
        assert_eq!(blocks_for(0, 10), 0..1);
        assert_eq!(blocks_for(495, 505), 0..2);
        assert_eq!(blocks_for(5, 5), 0..0);
    }

    #[test]
    fn blocks_are_fetched_ahead_of_the_viewport_within_the_result() {
        // In the middle of a block: that block only.
        assert_eq!(blocks_wanted(200, 230, 10_000), 0..1);
        // Within LOOKAHEAD_ROWS of the next block: it too, before it shows.
        assert_eq!(blocks_wanted(380, 410, 10_000), 0..2);
        // And of the previous one when scrolling back up.
        assert_eq!(blocks_wanted(560, 590, 10_000), 0..2);
        // Never past the last row.
        assert_eq!(blocks_wanted(9_970, 10_000, 10_000), 19..20);
        assert_eq!(blocks_wanted(0, 0, 10_000), 0..0);
    }

    #[test]
    fn cells_are_formatted_once_with_their_exact_value_and_tooltip() {
        let null = shown_cell(&Value::Null, true);
        assert_eq!(
            (null.class, null.text.as_str(), null.raw.as_str()),
            ("null", "NULL", "NULL")
        );
        assert_eq!(null.title, None);
        let number = shown_cell(&serde_json::json!(1234567), true);
        assert_eq!(
            (number.class, number.text.as_str()),
            ("numeric", "1,234,567")
        );
        assert_eq!(
            (number.raw.as_str(), number.title.as_deref()),
            ("1234567", Some("1234567"))
        );
        // An exact DECIMAL arrives as text and is shown as a number.
        let decimal = shown_cell(&serde_json::json!("-1234.50"), true);
        assert_eq!(
            (decimal.class, decimal.text.as_str()),
            ("numeric", "-1,234.50")
        );
        assert_eq!(decimal.raw, "-1234.50");
        let text = shown_cell(&serde_json::json!("NULL"), false);
        assert_eq!(
            (text.class, text.text.as_str(), text.raw.as_str()),
            ("", "NULL", "NULL")
        );
        assert_eq!(text.title.as_deref(), Some("NULL"));
    }
}
