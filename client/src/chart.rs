//! Charts over whole results, the pure part (tested natively): default
//! settings for a result, the aggregation each chart needs, asked of the
//! engine that ran the query (the server's `GET /api/queries/{id}/aggregate`
//! or SQL for duckdb-wasm), and the aggregated rows as the records Observable
//! Plot draws (`client/js/chart.js`), with a text alternative.

use serde_json::{json, Value};
use shared_domain::{ChartAggregate, ChartSettings, Column};

use crate::duckdb::sql::quote_identifier;
use crate::grid::{self, GridView};

pub use shared_domain::session::ChartKind;

/// Bins of a histogram unless the settings say otherwise.
pub const DEFAULT_BINS: u32 = 30;
/// Bins along x of a scatter plot (each dot aggregates one bin).
pub const SCATTER_BINS: u32 = 200;
/// The most groups a chart draws (categories beyond are left out, and said so).
pub const MAX_GROUPS: u32 = 2_000;

/// A value as a number: JSON numbers and numeric strings (big integers and
/// decimals arrive as strings).
pub fn numeric(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok().filter(|v| v.is_finite()),
        _ => None,
    }
}

/// Whether a DuckDB type is a date or time (a time axis).
pub fn is_time_type(data_type: &str) -> bool {
    let upper = data_type.trim().to_ascii_uppercase();
    upper == "DATE" || upper.starts_with("TIMESTAMP")
}

/// A first chart for a result: the first non-numeric column along x and
/// the sum of the last numeric one (a row count without one); a time x
/// makes a line, a numeric-only result a histogram of its first column.
pub fn default_settings(columns: &[Column]) -> Option<ChartSettings> {
    let first = columns.first()?;
    let numeric: Vec<&Column> = columns
        .iter()
        .filter(|c| grid::is_numeric_type(&c.data_type))
        .collect();
    let category = columns
        .iter()
        .find(|c| !grid::is_numeric_type(&c.data_type));
    let value = numeric
        .iter()
        .rev()
        .find(|c| Some(c.name.as_str()) != category.map(|c| c.name.as_str()));
    Some(match (category, value) {
        (Some(x), value) => ChartSettings {
            kind: if is_time_type(&x.data_type) {
                ChartKind::Line
            } else {
                ChartKind::Bar
            },
            x: x.name.clone(),
            aggregate: if value.is_some() {
                ChartAggregate::Sum
            } else {
                ChartAggregate::Count
            },
            y: value.map(|c| c.name.clone()),
            color: None,
            bins: None,
        },
        (None, _) => ChartSettings {
            kind: ChartKind::Histogram,
            x: first.name.clone(),
            aggregate: ChartAggregate::Count,
            y: None,
            color: None,
            bins: Some(DEFAULT_BINS),
        },
    })
}

/// The bins a chart groups a numeric x into (None: one group per x value).
pub fn bins_of(settings: &ChartSettings) -> Option<u32> {
    match settings.kind {
        ChartKind::Histogram => Some(settings.bins.unwrap_or(DEFAULT_BINS)),
        ChartKind::Scatter => Some(settings.bins.unwrap_or(SCATTER_BINS)),
        ChartKind::Bar | ChartKind::Line => settings.bins,
    }
}

fn measure(settings: &ChartSettings) -> String {
    match (settings.aggregate, &settings.y) {
        (ChartAggregate::Count, _) | (_, None) => "count(*)".to_owned(),
        (aggregate, Some(y)) => format!(
            "{}(CAST({} AS DOUBLE))",
            aggregate.name(),
            quote_identifier(y)
        ),
    }
}

/// The server's aggregation parameters (`GET /api/queries/{id}/aggregate`):
/// `x=col[&bin=N]&y=agg:col[&color=col]` and the grid's filters.
pub fn server_params(settings: &ChartSettings, view: &GridView) -> String {
    let mut params = format!("x={}", grid::encode(&settings.x));
    if let Some(bins) = bins_of(settings) {
        params.push_str(&format!("&bin={bins}"));
    }
    let y = match (settings.aggregate, &settings.y) {
        (ChartAggregate::Count, _) | (_, None) => "count:*".to_owned(),
        (aggregate, Some(y)) => format!("{}:{y}", aggregate.name()),
    };
    params.push_str(&format!("&y={}", grid::encode(&y)));
    if let Some(color) = &settings.color {
        params.push_str(&format!("&color={}", grid::encode(color)));
    }
    let filters = GridView {
        sort: None,
        filters: view.filters.clone(),
    };
    params.push_str(&grid::server_params(&filters));
    params
}

/// duckdb-wasm's aggregation of the whole result of `sql` (filtered like
/// the grid): columns `x`, `x2` (binned only), `color` (when set), `y`.
pub fn local_sql(sql: &str, settings: &ChartSettings, view: &GridView) -> String {
    let filtered = grid::local_sql(
        sql,
        &GridView {
            sort: None,
            filters: view.filters.clone(),
        },
    );
    let x = quote_identifier(&settings.x);
    let color = settings
        .color
        .as_ref()
        .map(|c| format!(", {} AS color", quote_identifier(c)))
        .unwrap_or_default();
    let color_group = if settings.color.is_some() {
        ", color"
    } else {
        ""
    };
    let y = measure(settings);
    match bins_of(settings) {
        None => format!(
            "SELECT {x} AS x{color}, {y} AS y FROM ({filtered}) AS sextant_chart \
             GROUP BY x{color_group} ORDER BY x{color_group} LIMIT {MAX_GROUPS}"
        ),
        Some(bins) => format!(
            "WITH sextant_rows AS ({filtered}), \
             sextant_range AS (SELECT min(CAST({x} AS DOUBLE)) AS lo, \
             greatest((max(CAST({x} AS DOUBLE)) - min(CAST({x} AS DOUBLE))) / {bins}, 1e-9) AS width \
             FROM sextant_rows) \
             SELECT lo + sextant_bin * width AS x, lo + (sextant_bin + 1) * width AS x2{color}, {y} AS y \
             FROM (SELECT *, least(floor((CAST({x} AS DOUBLE) - lo) / width), {last}) AS sextant_bin \
             FROM sextant_rows, sextant_range WHERE {x} IS NOT NULL) AS sextant_binned \
             GROUP BY sextant_bin, lo, width{color_group} ORDER BY x{color_group}",
            last = bins - 1,
        ),
    }
}

/// One group of [`aggregate_rows`]: its key, head values, count, sum, min, max.
type Group = ((String, String), Vec<Value>, f64, f64, f64, f64);

/// The same aggregation over rows held here (`columns` / `rows` of a
/// result page): the fallback when the server has no aggregation API.
/// Returns columns `x`, [`x2`], [`color`], `y`.
pub fn aggregate_rows(
    columns: &[Column],
    rows: &[Vec<Value>],
    settings: &ChartSettings,
) -> (Vec<Column>, Vec<Vec<Value>>) {
    let index = |name: &str| columns.iter().position(|c| c.name == name);
    let (Some(x), y, color) = (
        index(&settings.x),
        settings.y.as_deref().and_then(index),
        settings.color.as_deref().and_then(index),
    ) else {
        return (Vec::new(), Vec::new());
    };
    let bins = bins_of(settings);
    let xs: Vec<f64> = rows
        .iter()
        .filter_map(|r| r.get(x).and_then(numeric))
        .collect();
    let lo = xs.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    // (x key, color key), head values (x, [x2], [color]), count, sum, min, max
    let mut groups: Vec<Group> = Vec::new();
    for row in rows {
        let (key_x, x_values) = match bins {
            Some(bins) => {
                let Some(v) = row.get(x).and_then(numeric) else {
                    continue;
                };
                let width = ((hi - lo) / bins as f64).max(1e-9);
                let bin = (((v - lo) / width).floor() as u32).min(bins - 1);
                let start = lo + bin as f64 * width;
                (
                    format!("{bin:010}"),
                    vec![json!(start), json!(start + width)],
                )
            }
            None => {
                let value = row.get(x).cloned().unwrap_or(Value::Null);
                (value.to_string(), vec![value])
            }
        };
        let color_value = color.and_then(|c| row.get(c)).cloned();
        let key = (
            key_x,
            color_value
                .as_ref()
                .map(Value::to_string)
                .unwrap_or_default(),
        );
        let measured = match y {
            Some(y) => row.get(y).and_then(numeric),
            None => Some(1.0),
        };
        let slot = match groups.iter().position(|g| g.0 == key) {
            Some(i) => i,
            None => {
                let mut head = x_values;
                if let Some(c) = color_value {
                    head.push(c);
                }
                groups.push((key, head, 0.0, 0.0, f64::INFINITY, f64::NEG_INFINITY));
                groups.len() - 1
            }
        };
        let group = &mut groups[slot];
        group.2 += 1.0;
        if let Some(v) = measured {
            group.3 += v;
            group.4 = group.4.min(v);
            group.5 = group.5.max(v);
        }
    }
    groups.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out_columns = vec![Column::new("x", "")];
    if bins.is_some() {
        out_columns.push(Column::new("x2", "DOUBLE"));
    }
    if settings.color.is_some() {
        out_columns.push(Column::new("color", ""));
    }
    out_columns.push(Column::new("y", "DOUBLE"));
    let out_rows = groups
        .into_iter()
        .map(|(_, mut head, count, sum, min, max)| {
            let value = match (settings.aggregate, y) {
                (ChartAggregate::Count, _) | (_, None) => count,
                (ChartAggregate::Sum, _) => sum,
                (ChartAggregate::Avg, _) => sum / count.max(1.0),
                (ChartAggregate::Min, _) => min,
                (ChartAggregate::Max, _) => max,
            };
            head.push(json!(value));
            head
        })
        .take(MAX_GROUPS as usize)
        .collect();
    (out_columns, out_rows)
}

/// The server's aggregation table (`x` column named after the x column,
/// then the colour column, then the measure; a binned x labelled by its
/// bin's start) renamed to `x`, [`x2`], [`color`], `y`: a numeric bin's end
/// is the next bin's start (the narrowest gap between starts).
pub fn from_server(
    columns: &[Column],
    rows: &[Vec<Value>],
    settings: &ChartSettings,
) -> (Vec<Column>, Vec<Vec<Value>>) {
    let with_color = settings.color.is_some();
    let y = columns.len().saturating_sub(1);
    let starts: Vec<f64> = rows
        .iter()
        .filter_map(|r| r.first().and_then(numeric))
        .collect();
    let width = starts
        .windows(2)
        .map(|w| w[1] - w[0])
        .filter(|d| *d > 0.0)
        .fold(f64::INFINITY, f64::min);
    let binned = bins_of(settings).is_some() && width.is_finite();
    let mut names = vec![Column::new(
        "x",
        columns.first().map_or("", |c| &c.data_type),
    )];
    if binned {
        names.push(Column::new("x2", "DOUBLE"));
    }
    if with_color {
        names.push(Column::new("color", ""));
    }
    names.push(Column::new("y", "DOUBLE"));
    let out = rows
        .iter()
        .map(|row| {
            let mut out = vec![row.first().cloned().unwrap_or(Value::Null)];
            if binned {
                out.push(
                    row.first()
                        .and_then(numeric)
                        .map_or(Value::Null, |start| json!(start + width)),
                );
            }
            if with_color {
                out.push(row.get(1).cloned().unwrap_or(Value::Null));
            }
            out.push(row.get(y).cloned().unwrap_or(Value::Null));
            out
        })
        .collect();
    (names, out)
}

/// Aggregated rows (`x`, [`x2`], [`color`], `y` by column name, else in that
/// order) as Plot's records `{x, x2, color, y}`; rows without a numeric y
/// are left out.
pub fn records(columns: &[Column], rows: &[Vec<Value>], settings: &ChartSettings) -> Vec<Value> {
    let binned = bins_of(settings).is_some();
    let position = |name: &str, fallback: Option<usize>| {
        columns.iter().position(|c| c.name == name).or(fallback)
    };
    let mut next = 0;
    let mut take = |present: bool| {
        present.then(|| {
            next += 1;
            next - 1
        })
    };
    let x = position("x", take(true));
    let x2 = position("x2", take(binned));
    let color = position("color", take(settings.color.is_some()));
    let y = position("y", take(true));
    rows.iter()
        .filter_map(|row| {
            let value = numeric(row.get(y?)?)?;
            // Whole numbers read as such (a sum of integers is a DOUBLE in SQL).
            let value = if value.fract() == 0.0 && value.abs() < 9e15 {
                json!(value as i64)
            } else {
                json!(value)
            };
            let mut record = json!({ "x": row.get(x?)?.clone(), "y": value });
            if let Some(x2) = x2.and_then(|i| row.get(i)) {
                record["x2"] = x2.clone();
            }
            if let Some(color) = color.and_then(|i| row.get(i)) {
                record["color"] = match color {
                    Value::Null => Value::String("NULL".into()),
                    other => other.clone(),
                };
            }
            Some(record)
        })
        .collect()
}

/// One line saying what a chart shows, for its accessible name.
pub fn title(settings: &ChartSettings) -> String {
    let value = match (settings.aggregate, &settings.y) {
        (ChartAggregate::Count, _) | (_, None) => "row count".to_owned(),
        (aggregate, Some(y)) => format!("{} of {y}", aggregate.name()),
    };
    let by = match bins_of(settings) {
        Some(bins) => format!("{} in {bins} bins", settings.x),
        None => settings.x.clone(),
    };
    let color = settings
        .color
        .as_ref()
        .map(|c| format!(", coloured by {c}"))
        .unwrap_or_default();
    let kind = match settings.kind {
        ChartKind::Bar => "Bar chart",
        ChartKind::Line => "Line chart",
        ChartKind::Scatter => "Scatter plot",
        ChartKind::Histogram => "Histogram",
    };
    format!("{kind} of {value} by {by}{color}, over all rows")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grid::{Filter, FilterOp};

    fn settings(kind: ChartKind, aggregate: ChartAggregate, y: Option<&str>) -> ChartSettings {
        ChartSettings {
            kind,
            x: "borough".into(),
            aggregate,
            y: y.map(str::to_owned),
            color: None,
            bins: None,
        }
    }

    #[test]
    fn defaults_follow_the_column_types() {
        let columns = vec![
            Column::new("borough", "VARCHAR"),
            Column::new("trips", "BIGINT"),
            Column::new("fare", "DECIMAL(12,2)"),
        ];
        let chosen = default_settings(&columns).unwrap();
        assert_eq!(
            (
                chosen.kind,
                chosen.x.as_str(),
                chosen.aggregate,
                chosen.y.as_deref()
            ),
            (ChartKind::Bar, "borough", ChartAggregate::Sum, Some("fare"))
        );
        let only_numbers = default_settings(&[Column::new("i", "BIGINT")]).unwrap();
        assert_eq!(only_numbers.kind, ChartKind::Histogram);
        let by_day = default_settings(&[Column::new("day", "DATE")]).unwrap();
        assert_eq!(
            (by_day.kind, by_day.aggregate),
            (ChartKind::Line, ChartAggregate::Count)
        );
        assert!(default_settings(&[]).is_none());
    }

    #[test]
    fn the_server_is_asked_for_the_aggregation_with_the_grid_filters() {
        let mut s = settings(ChartKind::Histogram, ChartAggregate::Count, None);
        s.color = Some("payment type".into());
        let view = GridView {
            sort: None,
            filters: vec![Filter {
                column: "fare".into(),
                op: FilterOp::Gt,
                value: "5".into(),
            }],
        };
        assert_eq!(
            server_params(&s, &view),
            "x=borough&bin=30&y=count%3A%2A&color=payment%20type&filter=fare%3Agt%3A5"
        );
        let bars = settings(ChartKind::Bar, ChartAggregate::Avg, Some("fare"));
        assert_eq!(
            server_params(&bars, &GridView::default()),
            "x=borough&y=avg%3Afare"
        );
    }

    #[test]
    fn local_aggregations_group_or_bin_the_whole_result() {
        let bars = settings(ChartKind::Bar, ChartAggregate::Sum, Some("fare"));
        assert_eq!(
            local_sql("SELECT * FROM demo;", &bars, &GridView::default()),
            "SELECT \"borough\" AS x, sum(CAST(\"fare\" AS DOUBLE)) AS y FROM \
             (SELECT * FROM (SELECT * FROM demo\n) AS sextant_view) AS sextant_chart \
             GROUP BY x ORDER BY x LIMIT 2000"
        );
        let mut histogram = settings(ChartKind::Histogram, ChartAggregate::Count, None);
        histogram.bins = Some(10);
        let sql = local_sql("SELECT 1", &histogram, &GridView::default());
        assert!(
            sql.contains("least(floor((CAST(\"borough\" AS DOUBLE) - lo) / width), 9)"),
            "{sql}"
        );
        assert!(sql.contains("count(*) AS y"), "{sql}");
    }

    #[test]
    fn records_take_named_columns_or_positions() {
        let mut s = settings(ChartKind::Bar, ChartAggregate::Count, None);
        s.color = Some("kind".into());
        let columns = vec![
            Column::new("x", "VARCHAR"),
            Column::new("color", "VARCHAR"),
            Column::new("y", "BIGINT"),
        ];
        let rows = vec![
            vec![json!("Bronx"), Value::Null, json!(3)],
            vec![json!("Queens"), json!("card"), json!("not a number")],
        ];
        assert_eq!(
            records(&columns, &rows, &s),
            vec![json!({"x": "Bronx", "color": "NULL", "y": 3})]
        );
        let unnamed = vec![
            Column::new("a", "DOUBLE"),
            Column::new("b", "DOUBLE"),
            Column::new("c", "BIGINT"),
        ];
        let binned = settings(ChartKind::Histogram, ChartAggregate::Count, None);
        assert_eq!(
            records(&unnamed, &[vec![json!(0.0), json!(1.5), json!(7)]], &binned),
            vec![json!({"x": 0.0, "x2": 1.5, "y": 7})]
        );
    }

    #[test]
    fn rows_held_here_aggregate_like_the_engines() {
        let columns = vec![
            Column::new("borough", "VARCHAR"),
            Column::new("fare", "DOUBLE"),
        ];
        let rows = vec![
            vec![json!("Queens"), json!(2.0)],
            vec![json!("Bronx"), json!(1.0)],
            vec![json!("Queens"), json!(4.0)],
        ];
        let sum = settings(ChartKind::Bar, ChartAggregate::Avg, Some("fare"));
        let (names, out) = aggregate_rows(&columns, &rows, &sum);
        assert_eq!(names.len(), 2);
        assert_eq!(
            out,
            vec![
                vec![json!("Bronx"), json!(1.0)],
                vec![json!("Queens"), json!(3.0)]
            ]
        );
        let mut histogram = settings(ChartKind::Histogram, ChartAggregate::Count, None);
        histogram.x = "fare".into();
        histogram.bins = Some(3);
        let (_, bins) = aggregate_rows(&columns, &rows, &histogram);
        let counts: Vec<f64> = bins.iter().map(|r| r[2].as_f64().unwrap()).collect();
        assert_eq!(counts, vec![1.0, 1.0, 1.0]);
        assert_eq!(bins[2][1], json!(4.0));
    }

    #[test]
    fn server_tables_are_renamed_and_bins_get_their_end() {
        let mut s = settings(ChartKind::Histogram, ChartAggregate::Count, None);
        s.x = "fare".into();
        let columns = vec![
            Column::new("fare", "DOUBLE"),
            Column::new("count_star", "BIGINT"),
        ];
        let rows = vec![vec![json!(0.0), json!(2)], vec![json!(2.5), json!(3)]];
        let (names, out) = from_server(&columns, &rows, &s);
        let names: Vec<&str> = names.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["x", "x2", "y"]);
        assert_eq!(out[1], vec![json!(2.5), json!(5.0), json!(3)]);
        let mut bars = settings(ChartKind::Bar, ChartAggregate::Sum, Some("fare"));
        bars.color = Some("kind".into());
        let columns = vec![
            Column::new("borough", "VARCHAR"),
            Column::new("kind", "VARCHAR"),
            Column::new("sum_fare", "DOUBLE"),
        ];
        let (_, out) = from_server(
            &columns,
            &[vec![json!("Bronx"), json!("card"), json!(1.5)]],
            &bars,
        );
        assert_eq!(out[0], vec![json!("Bronx"), json!("card"), json!(1.5)]);
    }

    #[test]
    fn the_title_says_what_is_drawn() {
        let mut s = settings(ChartKind::Histogram, ChartAggregate::Count, None);
        s.color = Some("kind".into());
        assert_eq!(
            title(&s),
            "Histogram of row count by borough in 30 bins, coloured by kind, over all rows"
        );
    }
}
