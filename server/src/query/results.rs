//! Query results as kept in memory (derived data, recomputable from the
//! query text) and their pages: JSON rows in column order, or Arrow IPC.

use std::sync::Arc;

use duckdb::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use duckdb::arrow::compute::concat_batches;
use duckdb::arrow::datatypes::{DataType, SchemaRef};
use duckdb::arrow::util::display::{ArrayFormatter, FormatOptions};
use serde::Serialize;
use serde_json::{Number, Value};
use shared_domain::Column;

/// The largest integer a JSON number carries exactly (2^53).
const MAX_SAFE_INTEGER: i128 = 1 << 53;

/// A query's result, or its first rows when it was too large to keep.
#[derive(Debug)]
pub struct StoredResult {
    pub columns: Vec<Column>,
    /// The kept rows, as one batch.
    pub batch: RecordBatch,
    /// Rows of the whole result.
    pub total_rows: u64,
    /// Whether `batch` holds only the first rows.
    pub truncated: bool,
}

impl StoredResult {
    /// Joins the kept batches into one (pages are then cheap slices).
    pub fn new(
        columns: Vec<Column>,
        schema: SchemaRef,
        batches: &[RecordBatch],
        total_rows: u64,
    ) -> Result<Self, String> {
        let batch = concat_batches(&schema, batches).map_err(|e| e.to_string())?;
        let truncated = (batch.num_rows() as u64) < total_rows;
        Ok(Self {
            columns,
            batch,
            total_rows,
            truncated,
        })
    }

    /// Bytes held, for the cache's weigher.
    pub fn weight(&self) -> u32 {
        let bytes = self.batch.get_array_memory_size() + 256;
        u32::try_from(bytes).unwrap_or(u32::MAX)
    }

    /// Rows `offset..offset + limit` of the kept rows.
    pub fn page(&self, offset: u64, limit: u64) -> RecordBatch {
        let kept = self.batch.num_rows() as u64;
        let start = offset.min(kept);
        let len = limit.min(kept - start);
        self.batch.slice(start as usize, len as usize)
    }
}

/// The JSON page: `{"columns", "rows", "total_rows", "offset", …}`.
#[derive(Debug, Serialize)]
pub struct JsonPage {
    pub columns: Vec<Column>,
    pub rows: Vec<Vec<Value>>,
    pub total_rows: u64,
    pub offset: u64,
    /// Rows kept by the server (all of them unless `truncated`).
    pub available_rows: u64,
    /// Whether only the first `available_rows` rows can be paged here; the
    /// downloads still hold everything.
    pub truncated: bool,
}

impl JsonPage {
    pub fn new(result: &StoredResult, offset: u64, limit: u64) -> Result<Self, String> {
        Self::of(
            result,
            &result.page(offset, limit),
            result.total_rows,
            offset,
        )
    }

    /// A page computed elsewhere (filtered, sorted) from `result`'s kept
    /// rows, `total_rows` of which matched.
    pub fn of(
        result: &StoredResult,
        page: &RecordBatch,
        total_rows: u64,
        offset: u64,
    ) -> Result<Self, String> {
        Ok(Self {
            columns: result.columns.clone(),
            rows: rows_as_json(page)?,
            total_rows,
            offset,
            available_rows: result.batch.num_rows() as u64,
            truncated: result.truncated,
        })
    }
}

/// A batch as rows of JSON values in column order.
pub fn rows_as_json(batch: &RecordBatch) -> Result<Vec<Vec<Value>>, String> {
    let columns: Vec<Vec<Value>> = batch
        .columns()
        .iter()
        .map(array_as_json)
        .collect::<Result<_, _>>()?;
    Ok((0..batch.num_rows())
        .map(|row| columns.iter().map(|column| column[row].clone()).collect())
        .collect())
}

fn integer(value: i128) -> Value {
    if (-MAX_SAFE_INTEGER..=MAX_SAFE_INTEGER).contains(&value) {
        Value::Number(Number::from(value as i64))
    } else {
        Value::String(value.to_string())
    }
}

fn float(value: f64) -> Value {
    Number::from_f64(value)
        .map(Value::Number)
        .unwrap_or_else(|| Value::String(value.to_string()))
}

/// One column as JSON values: integers beyond 2^53, decimals and huge
/// integers as strings, dates and timestamps as ISO 8601 strings, lists as
/// arrays, structs as objects.
fn array_as_json(array: &ArrayRef) -> Result<Vec<Value>, String> {
    use duckdb::arrow::datatypes::{
        Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Int8Type, UInt16Type,
        UInt32Type, UInt64Type, UInt8Type,
    };
    macro_rules! primitive {
        ($ty:ty, $convert:expr) => {{
            let typed = array.as_primitive::<$ty>();
            (0..typed.len())
                .map(|i| {
                    if typed.is_null(i) {
                        Value::Null
                    } else {
                        $convert(typed.value(i))
                    }
                })
                .collect()
        }};
    }
    let values = match array.data_type() {
        DataType::Null => vec![Value::Null; array.len()],
        DataType::Boolean => {
            let typed = array.as_boolean();
            (0..typed.len())
                .map(|i| {
                    if typed.is_null(i) {
                        Value::Null
                    } else {
                        Value::Bool(typed.value(i))
                    }
                })
                .collect()
        }
        DataType::Int8 => primitive!(Int8Type, |v: i8| integer(v as i128)),
        DataType::Int16 => primitive!(Int16Type, |v: i16| integer(v as i128)),
        DataType::Int32 => primitive!(Int32Type, |v: i32| integer(v as i128)),
        DataType::Int64 => primitive!(Int64Type, |v: i64| integer(v as i128)),
        DataType::UInt8 => primitive!(UInt8Type, |v: u8| integer(v as i128)),
        DataType::UInt16 => primitive!(UInt16Type, |v: u16| integer(v as i128)),
        DataType::UInt32 => primitive!(UInt32Type, |v: u32| integer(v as i128)),
        DataType::UInt64 => primitive!(UInt64Type, |v: u64| integer(v as i128)),
        DataType::Float32 => primitive!(Float32Type, |v: f32| float(v as f64)),
        DataType::Float64 => primitive!(Float64Type, float),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            let formatter = formatter(array)?;
            (0..array.len())
                .map(|i| {
                    if array.is_null(i) {
                        Value::Null
                    } else {
                        Value::String(formatter.value(i).to_string())
                    }
                })
                .collect()
        }
        DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(_, _) => (0..array
            .len())
            .map(|i| {
                if array.is_null(i) {
                    return Ok(Value::Null);
                }
                let child = match array.data_type() {
                    DataType::List(_) => array.as_list::<i32>().value(i),
                    DataType::LargeList(_) => array.as_list::<i64>().value(i),
                    _ => array.as_fixed_size_list().value(i),
                };
                array_as_json(&child).map(Value::Array)
            })
            .collect::<Result<_, String>>()?,
        DataType::Struct(fields) => {
            let typed = array.as_struct();
            let children: Vec<Vec<Value>> = typed
                .columns()
                .iter()
                .map(array_as_json)
                .collect::<Result<_, _>>()?;
            (0..typed.len())
                .map(|i| {
                    if typed.is_null(i) {
                        Value::Null
                    } else {
                        Value::Object(
                            fields
                                .iter()
                                .zip(&children)
                                .map(|(field, values)| (field.name().clone(), values[i].clone()))
                                .collect(),
                        )
                    }
                })
                .collect()
        }
        // Decimals, huge integers (Decimal128(38, 0)), dates, times,
        // timestamps, intervals, maps, enums, blobs: Arrow's display, which
        // writes ISO 8601 for temporal types.
        _ => {
            let formatter = formatter(array)?;
            (0..array.len())
                .map(|i| {
                    if array.is_null(i) {
                        Value::Null
                    } else {
                        Value::String(formatter.value(i).to_string())
                    }
                })
                .collect()
        }
    };
    Ok(values)
}

fn formatter(array: &ArrayRef) -> Result<ArrayFormatter<'_>, String> {
    static OPTIONS: std::sync::LazyLock<FormatOptions<'static>> =
        std::sync::LazyLock::new(|| FormatOptions::default().with_display_error(true));
    ArrayFormatter::try_new(array.as_ref(), &OPTIONS).map_err(|e| e.to_string())
}

/// A batch as an Arrow IPC stream (schema, one record batch, end marker).
pub fn arrow_ipc(batch: &RecordBatch) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    {
        let mut writer = arrow::ipc::writer::StreamWriter::try_new(&mut out, &batch.schema())
            .map_err(|e| e.to_string())?;
        writer.write(batch).map_err(|e| e.to_string())?;
        writer.finish().map_err(|e| e.to_string())?;
    }
    Ok(out)
}

/// Shared so the cache and every reader hold the same rows.
pub type SharedResult = Arc<StoredResult>;

#[cfg(test)]
mod tests {
    use super::*;
    use duckdb::arrow::array::{Decimal128Array, Int64Array, StringArray};
    use duckdb::arrow::datatypes::{Field, Schema};

    fn batch() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("name", DataType::Utf8, true),
            Field::new("amount", DataType::Decimal128(10, 2), true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![Some(1), Some(1 << 60), None])),
                Arc::new(StringArray::from(vec![Some("a"), None, Some("c")])),
                Arc::new(
                    Decimal128Array::from(vec![Some(12345), Some(-5), None])
                        .with_precision_and_scale(10, 2)
                        .unwrap(),
                ),
            ],
        )
        .unwrap()
    }

    #[test]
    fn json_rows_keep_exactness() {
        let rows = rows_as_json(&batch()).unwrap();
        assert_eq!(
            rows[0],
            vec![Value::from(1), Value::from("a"), Value::from("123.45")]
        );
        assert_eq!(rows[1][0], Value::from((1i64 << 60).to_string()));
        assert_eq!(rows[1][2], Value::from("-0.05"));
        assert_eq!(rows[2], vec![Value::Null, Value::from("c"), Value::Null]);
    }

    #[test]
    fn pages_slice_the_kept_rows() {
        let b = batch();
        let result = StoredResult::new(vec![], b.schema(), &[b.clone(), b], 10).unwrap();
        assert!(result.truncated);
        assert_eq!(result.page(0, 4).num_rows(), 4);
        assert_eq!(result.page(4, 100).num_rows(), 2);
        assert_eq!(result.page(100, 10).num_rows(), 0);
        let ipc = arrow_ipc(&result.page(1, 2)).unwrap();
        let reader =
            arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(ipc), None).unwrap();
        let batches: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
        assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 2);
    }
}
