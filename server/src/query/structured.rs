//! Structured requests over a completed result: filtered and sorted pages,
//! chart aggregations and column profiles. The client never sends SQL:
//! these types are parsed from query parameters, every column name is
//! checked against the result's columns and quoted, every value is a
//! quoted literal, and the SQL is built here (pure, tested). It runs on the
//! trusted instance over the result's stored Parquet file (its kept rows),
//! on a query slot like the result itself.

use std::path::Path;
use std::sync::Arc;

use duckdb::arrow::array::RecordBatch;
use serde::Serialize;
use serde_json::Value;
use shared_domain::Column;

use super::duck::{quote_identifier, quote_literal, RawConnection, RunControl, RunError};
use super::results::rows_as_json;
use super::slots::JobControl;

/// The most groups an aggregation returns (more are cut, and it says so).
pub const MAX_GROUPS: u64 = 10_000;
/// The most bins a binned x may have.
pub const MAX_BINS: u32 = 1_000;

/// The name the result's rows have in the generated SQL.
const SOURCE: &str = "result_rows";

/// A filter operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
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

impl Op {
    fn parse(text: &str) -> Result<Op, String> {
        Ok(match text {
            "eq" => Op::Eq,
            "ne" => Op::Ne,
            "lt" => Op::Lt,
            "le" => Op::Le,
            "gt" => Op::Gt,
            "ge" => Op::Ge,
            "contains" => Op::Contains,
            "is_null" => Op::IsNull,
            "not_null" => Op::NotNull,
            other => {
                return Err(format!(
                    "unknown filter operator {other:?}; use eq, ne, lt, le, gt, ge, contains, is_null or not_null"
                ))
            }
        })
    }
}

/// `column:op:value` (the value may itself contain colons; none for the null checks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    pub column: String,
    pub op: Op,
    pub value: Option<String>,
}

impl Filter {
    pub fn parse(raw: &str) -> Result<Filter, String> {
        let mut parts = raw.splitn(3, ':');
        let column = parts.next().unwrap_or_default().to_owned();
        let op = Op::parse(parts.next().ok_or_else(|| {
            format!("filter {raw:?} must look like column:op:value (or column:is_null)")
        })?)?;
        let value = parts.next().map(str::to_owned);
        match (op, &value) {
            (Op::IsNull | Op::NotNull, Some(_)) => Err(format!(
                "filter {raw:?}: is_null and not_null take no value"
            )),
            (Op::IsNull | Op::NotNull, None) => Ok(Filter { column, op, value }),
            (_, None) => Err(format!("filter {raw:?} needs a value: column:op:value")),
            (_, Some(_)) => Ok(Filter { column, op, value }),
        }
    }
}

/// One sort key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sort {
    pub column: String,
    pub descending: bool,
}

/// `col:desc,col2:asc` (the direction defaults to ascending).
pub fn parse_sort(raw: &str) -> Result<Vec<Sort>, String> {
    raw.split(',')
        .filter(|key| !key.is_empty())
        .map(|key| {
            let (column, direction) = match key.rsplit_once(':') {
                Some((column, direction)) => (column, direction),
                None => (key, "asc"),
            };
            let descending = match direction {
                "asc" => false,
                "desc" => true,
                other => return Err(format!("sort direction {other:?} must be asc or desc")),
            };
            Ok(Sort {
                column: column.to_owned(),
                descending,
            })
        })
        .collect()
}

/// An aggregate function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Agg {
    Count,
    Sum,
    Avg,
    Min,
    Max,
}

/// `count:*`, `sum:fare`, …
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Measure {
    pub agg: Agg,
    /// None: every row (`count:*`).
    pub column: Option<String>,
}

impl Measure {
    pub fn parse(raw: &str) -> Result<Measure, String> {
        let (agg, column) = raw
            .split_once(':')
            .ok_or_else(|| format!("y {raw:?} must look like count:* or sum:column"))?;
        let agg = match agg {
            "count" => Agg::Count,
            "sum" => Agg::Sum,
            "avg" => Agg::Avg,
            "min" => Agg::Min,
            "max" => Agg::Max,
            other => {
                return Err(format!(
                    "unknown aggregate {other:?}; use count, sum, avg, min or max"
                ))
            }
        };
        let column = (column != "*").then(|| column.to_owned());
        if column.is_none() && agg != Agg::Count {
            return Err(format!("y {raw:?}: only count may take *"));
        }
        Ok(Measure { agg, column })
    }

    /// The output column's name: `count`, `sum_fare`, `count_tip`, …
    fn alias(&self) -> String {
        let name = match self.agg {
            Agg::Count => "count",
            Agg::Sum => "sum",
            Agg::Avg => "avg",
            Agg::Min => "min",
            Agg::Max => "max",
        };
        match &self.column {
            Some(column) => format!("{name}_{column}"),
            None => name.to_owned(),
        }
    }
}

/// A chart aggregation: group by x (binned or not) and color, measure y.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Aggregation {
    pub x: String,
    pub bin: Option<u32>,
    pub y: Vec<Measure>,
    pub color: Option<String>,
    pub filters: Vec<Filter>,
}

/// Checks a column name against the result's columns.
fn column<'a>(columns: &'a [Column], name: &str) -> Result<&'a Column, String> {
    columns.iter().find(|c| c.name == name).ok_or_else(|| {
        let known: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
        format!(
            "the result has no column {name:?}; its columns are {}",
            known.join(", ")
        )
    })
}

fn is_numeric(type_name: &str) -> bool {
    let base = type_name.split('(').next().unwrap_or_default();
    matches!(
        base,
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
            | "DECIMAL"
    )
}

fn is_temporal(type_name: &str) -> bool {
    type_name == "DATE" || type_name.starts_with("TIMESTAMP")
}

/// `WHERE …` for `filters` (empty when there are none).
pub fn where_clause(columns: &[Column], filters: &[Filter]) -> Result<String, String> {
    let mut conditions = Vec::new();
    for filter in filters {
        column(columns, &filter.column)?;
        let name = quote_identifier(&filter.column);
        let value = filter.value.as_deref().map(quote_literal);
        let value = || value.clone().unwrap_or_default();
        // A string literal takes the column's type, so '10' compares as a number.
        conditions.push(match filter.op {
            Op::Eq => format!("{name} = {}", value()),
            Op::Ne => format!("{name} <> {}", value()),
            Op::Lt => format!("{name} < {}", value()),
            Op::Le => format!("{name} <= {}", value()),
            Op::Gt => format!("{name} > {}", value()),
            Op::Ge => format!("{name} >= {}", value()),
            Op::Contains => format!("contains(CAST({name} AS VARCHAR), {})", value()),
            Op::IsNull => format!("{name} IS NULL"),
            Op::NotNull => format!("{name} IS NOT NULL"),
        });
    }
    Ok(if conditions.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conditions.join(" AND "))
    })
}

/// The SQL of a filtered, sorted page and of its row count.
pub fn page_sql(
    columns: &[Column],
    filters: &[Filter],
    sort: &[Sort],
    offset: u64,
    limit: u64,
) -> Result<(String, String), String> {
    let filtered = where_clause(columns, filters)?;
    let mut keys = Vec::new();
    for key in sort {
        column(columns, &key.column)?;
        keys.push(format!(
            "{} {} NULLS LAST",
            quote_identifier(&key.column),
            if key.descending { "DESC" } else { "ASC" }
        ));
    }
    let order = if keys.is_empty() {
        String::new()
    } else {
        format!(" ORDER BY {}", keys.join(", "))
    };
    Ok((
        format!("SELECT * FROM {SOURCE}{filtered}{order} LIMIT {limit} OFFSET {offset}"),
        format!("SELECT count(*) FROM {SOURCE}{filtered}"),
    ))
}

/// The SQL of an aggregation (at most [`MAX_GROUPS`] + 1 rows, so that a
/// cut can be told).
pub fn aggregate_sql(columns: &[Column], request: &Aggregation) -> Result<String, String> {
    let filtered = where_clause(columns, &request.filters)?;
    let x_column = column(columns, &request.x)?;
    let x = quote_identifier(&request.x);
    if request.y.is_empty() {
        return Err("give at least one y, such as y=count:*".into());
    }
    let mut measures = Vec::new();
    for measure in &request.y {
        let argument = match &measure.column {
            Some(name) => {
                let col = column(columns, name)?;
                if matches!(measure.agg, Agg::Sum | Agg::Avg) && !is_numeric(&col.data_type) {
                    return Err(format!(
                        "{name:?} is {}, not a number: it cannot be summed or averaged",
                        col.data_type
                    ));
                }
                quote_identifier(name)
            }
            None => "*".to_owned(),
        };
        let function = match measure.agg {
            Agg::Count => "count",
            Agg::Sum => "sum",
            Agg::Avg => "avg",
            Agg::Min => "min",
            Agg::Max => "max",
        };
        measures.push(format!(
            "{function}({argument}) AS {}",
            quote_identifier(&measure.alias())
        ));
    }
    let color = match &request.color {
        Some(name) => {
            column(columns, name)?;
            Some(quote_identifier(name))
        }
        None => None,
    };
    let group_color = color.as_ref().map(|c| format!(", {c}")).unwrap_or_default();
    let x_alias = quote_identifier(&request.x);
    let limit = MAX_GROUPS + 1;
    let Some(bins) = request.bin else {
        return Ok(format!(
            "SELECT {x} AS {x_alias}{group_color}, {measures} FROM {SOURCE}{filtered} \
             GROUP BY ALL ORDER BY 1 NULLS LAST{order_color} LIMIT {limit}",
            measures = measures.join(", "),
            order_color = if color.is_some() {
                ", 2 NULLS LAST"
            } else {
                ""
            },
        ));
    };
    if !(1..=MAX_BINS).contains(&bins) {
        return Err(format!("bin must be between 1 and {MAX_BINS}"));
    }
    let temporal = is_temporal(&x_column.data_type);
    if !temporal && !is_numeric(&x_column.data_type) {
        return Err(format!(
            "{:?} is {}: only numbers, dates and timestamps can be binned",
            request.x, x_column.data_type
        ));
    }
    // Numbers as doubles, times as epoch seconds; bins of equal width
    // between the minimum and the maximum, each labelled by its start.
    let value = if temporal {
        format!("epoch(CAST({x} AS TIMESTAMP))")
    } else {
        format!("CAST({x} AS DOUBLE)")
    };
    let start = if temporal {
        // A plain TIMESTAMP (to_timestamp's has a time zone).
        "make_timestamp(CAST((lo + bin * width) * 1000000 AS BIGINT))".to_owned()
    } else {
        "lo + bin * width".to_owned()
    };
    Ok(format!(
        "WITH filtered AS (SELECT *, {value} AS __x FROM {SOURCE}{filtered}), \
         bounds AS (SELECT min(__x) AS lo, greatest((max(__x) - min(__x)) / {bins}, 1e-300) AS width FROM filtered), \
         binned AS (SELECT filtered.*, CASE WHEN __x IS NULL THEN NULL \
             ELSE least(floor((__x - lo) / width), {last}) END AS bin, lo, width FROM filtered, bounds) \
         SELECT {start} AS {x_alias}{group_color}, {measures} FROM binned \
         GROUP BY bin, lo, width{group_color} ORDER BY bin NULLS LAST{order_color} LIMIT {limit}",
        last = bins - 1,
        measures = measures.join(", "),
        order_color = if color.is_some() { ", 2 NULLS LAST" } else { "" },
    ))
}

/// The SQL of a column profile.
pub fn profile_sql(columns: &[Column], name: &str) -> Result<String, String> {
    column(columns, name)?;
    let c = quote_identifier(name);
    Ok(format!(
        "SELECT count(*) AS rows, count(*) - count({c}) AS nulls, count(DISTINCT {c}) AS distinct_values, \
         min({c}) AS min, max({c}) AS max FROM {SOURCE}"
    ))
}

/// The JSON of an aggregation.
#[derive(Debug, Serialize)]
pub struct Table {
    pub columns: Vec<Column>,
    pub rows: Vec<Vec<Value>>,
    /// Whether more than [`MAX_GROUPS`] groups were cut off.
    pub truncated: bool,
}

/// Collects rows up to a cap, stopping the query when the job is stopped.
struct Collect<'a> {
    control: &'a JobControl,
    batches: Vec<RecordBatch>,
    rows: u64,
    cap: u64,
}

impl RunControl for Collect<'_> {
    fn check(&mut self) -> Result<(), String> {
        if self.control.is_stopped() {
            return Err("stopped".into());
        }
        Ok(())
    }
    fn progress(&mut self, _progress: crate::query::duck::Progress) {}
    fn batch(&mut self, batch: RecordBatch) -> Result<(), String> {
        if self.rows < self.cap {
            let take = (batch.num_rows() as u64).min(self.cap - self.rows);
            self.rows += take;
            self.batches.push(batch.slice(0, take as usize));
        }
        Ok(())
    }
}

/// Runs generated SQL over the stored result file `stored` on
/// `connection` (trusted instance). Returns the columns and at most `cap`
/// rows. Blocking.
pub fn run_over(
    connection: &mut RawConnection,
    control: &JobControl,
    stored: &Path,
    sql: &str,
    cap: u64,
) -> Result<(Vec<Column>, Vec<RecordBatch>), String> {
    connection
        .execute(&format!(
            "CREATE OR REPLACE TEMP VIEW {SOURCE} AS SELECT * FROM read_parquet({})",
            quote_literal(&stored.to_string_lossy())
        ))
        .map_err(|e| e.0)?;
    let outcome = (|| {
        let prepared = connection
            .prepare_single(sql, |_| true)
            .map_err(|e| format!("{e:?}"))?;
        let columns = prepared
            .columns()
            .into_iter()
            .map(|c| Column::new(c.name, c.type_name))
            .collect();
        let mut collect = Collect {
            control,
            batches: Vec::new(),
            rows: 0,
            cap,
        };
        prepared.run(&mut collect).map_err(|e| match e {
            RunError::Duck(error) => error.0,
            RunError::Stopped(reason) => reason,
        })?;
        Ok((columns, collect.batches))
    })();
    let _ = connection.execute(&format!("DROP VIEW IF EXISTS {SOURCE}"));
    outcome
}

/// Rows of `batches` as JSON.
pub fn json_rows(batches: &[RecordBatch]) -> Result<Vec<Vec<Value>>, String> {
    let mut rows = Vec::new();
    for batch in batches {
        rows.extend(rows_as_json(batch)?);
    }
    Ok(rows)
}

/// Joins `batches` into one (an empty batch of `schema` when there are none).
pub fn concat(
    schema: Arc<duckdb::arrow::datatypes::Schema>,
    batches: &[RecordBatch],
) -> Result<RecordBatch, String> {
    duckdb::arrow::compute::concat_batches(&schema, batches).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn columns() -> Vec<Column> {
        vec![
            Column::new("borough", "VARCHAR"),
            Column::new("fare", "DOUBLE"),
            Column::new("pickup", "TIMESTAMP"),
            Column::new("we\"ird", "INTEGER"),
        ]
    }

    #[test]
    fn filters_parse_with_colons_in_values_and_refuse_the_unknown() {
        assert_eq!(
            Filter::parse("pickup:ge:2024-01-01 10:00:00").unwrap(),
            Filter {
                column: "pickup".into(),
                op: Op::Ge,
                value: Some("2024-01-01 10:00:00".into())
            }
        );
        assert_eq!(Filter::parse("fare:is_null").unwrap().value, None);
        assert!(Filter::parse("fare:is_null:1").is_err());
        assert!(Filter::parse("fare:gt").is_err());
        assert!(Filter::parse("fare:like:%x").is_err());
        assert!(Filter::parse("fare").is_err());
    }

    #[test]
    fn identifiers_are_checked_and_quoted_and_values_are_literals() {
        let filters = vec![
            Filter::parse("borough:eq:Queens' OR 1=1 --").unwrap(),
            Filter::parse("we\"ird:gt:3").unwrap(),
            Filter::parse("borough:contains:ee").unwrap(),
        ];
        let clause = where_clause(&columns(), &filters).unwrap();
        assert_eq!(
            clause,
            " WHERE \"borough\" = 'Queens'' OR 1=1 --' AND \"we\"\"ird\" > '3' AND contains(CAST(\"borough\" AS VARCHAR), 'ee')"
        );
        let unknown = where_clause(&columns(), &[Filter::parse("x; DROP:eq:1").unwrap()]);
        assert!(unknown.unwrap_err().contains("no column"));
    }

    #[test]
    fn sorts_parse_and_pages_are_built() {
        let sort = parse_sort("fare:desc,borough").unwrap();
        assert_eq!(sort.len(), 2);
        assert!(sort[0].descending && !sort[1].descending);
        assert!(parse_sort("fare:down").is_err());
        let (page, count) = page_sql(&columns(), &[], &sort, 20, 10).unwrap();
        assert_eq!(
            page,
            "SELECT * FROM result_rows ORDER BY \"fare\" DESC NULLS LAST, \"borough\" ASC NULLS LAST LIMIT 10 OFFSET 20"
        );
        assert_eq!(count, "SELECT count(*) FROM result_rows");
        assert!(page_sql(&columns(), &[], &parse_sort("nope").unwrap(), 0, 1).is_err());
    }

    #[test]
    fn aggregations_check_their_columns_and_bins() {
        let request = |x: &str, bin, y: &[&str], color: Option<&str>| Aggregation {
            x: x.into(),
            bin,
            y: y.iter().map(|m| Measure::parse(m).unwrap()).collect(),
            color: color.map(str::to_owned),
            filters: vec![],
        };
        let sql = aggregate_sql(
            &columns(),
            &request("borough", None, &["count:*", "sum:fare"], None),
        )
        .unwrap();
        assert!(
            sql.contains("count(*) AS \"count\", sum(\"fare\") AS \"sum_fare\""),
            "{sql}"
        );
        assert!(sql.contains("GROUP BY ALL"), "{sql}");
        assert!(aggregate_sql(
            &columns(),
            &request("fare", Some(10), &["count:*"], Some("borough"))
        )
        .is_ok());
        assert!(aggregate_sql(
            &columns(),
            &request("pickup", Some(24), &["avg:fare"], None)
        )
        .unwrap()
        .contains("make_timestamp"));
        let refused = |r: Aggregation| aggregate_sql(&columns(), &r).unwrap_err();
        assert!(refused(request("borough", Some(5), &["count:*"], None)).contains("binned"));
        assert!(refused(request("fare", Some(0), &["count:*"], None)).contains("between"));
        assert!(refused(request("fare", None, &["sum:borough"], None)).contains("not a number"));
        assert!(refused(request("fare", None, &[], None)).contains("at least one"));
        assert!(refused(request("fare", None, &["count:*"], Some("nope"))).contains("no column"));
        assert!(Measure::parse("sum:*").is_err());
        assert!(Measure::parse("median:fare").is_err());
        assert!(profile_sql(&columns(), "nope").is_err());
    }
}
