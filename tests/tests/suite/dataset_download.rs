//! `GET /api/datasets/{name}/download`: a whole server dataset as an Arrow
//! IPC stream (what the browser takes offline into duckdb-wasm), announced
//! by `GET /api/datasets`; real DuckDB over real files in a temp dir.

use serde_json::{json, Value};
use server::query::arrow::array::{Array, AsArray};
use server::query::arrow::datatypes::{DataType, Int64Type};
use server::Config;

use crate::query::read_ipc;
use crate::sync_client::Api;

const SALES_CSV: &str = "id,region,amount,day\n\
    1,north,10.50,2024-01-02\n\
    2,south,7.25,2024-01-03\n\
    3,north,1.00,2024-02-01\n";

#[tokio::test]
async fn a_dataset_downloads_whole_as_arrow_ipc_and_is_announced_in_the_listing() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::for_data_dir(dir.path());
    config.no_demo = true;
    let datasets = config.query_settings().datasets_dir;
    std::fs::create_dir_all(&datasets).unwrap();
    std::fs::write(datasets.join("sales.csv"), SALES_CSV).unwrap();
    // More rows than one DuckDB batch, so the stream has several batches.
    server::query::demo::write_trips(&datasets.join("trips.parquet"), 30_000).unwrap();
    let running = sextant_tests::start_in_process(config).await.unwrap();
    let api = Api::new(format!("http://{}", running.addr));

    let (status, listing) = api.get("/api/datasets").await;
    assert_eq!(status, 200, "{listing}");
    let sales = listing["datasets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "sales")
        .cloned()
        .expect("sales is listed");
    assert_eq!(
        sales["download"],
        json!({"href": "/api/datasets/sales/download", "media_type": "application/vnd.apache.arrow.stream"})
    );
    assert_eq!(sales["bytes"], json!(SALES_CSV.len()));

    let (status, content_type, bytes) = api.get_raw("/api/datasets/sales/download", None).await;
    assert_eq!(status, 200);
    assert_eq!(content_type, "application/vnd.apache.arrow.stream");
    let batches = read_ipc(&bytes);
    let schema = batches[0].schema();
    let fields: Vec<(String, DataType)> = schema
        .fields()
        .iter()
        .map(|f| (f.name().clone(), f.data_type().clone()))
        .collect();
    assert_eq!(
        fields,
        vec![
            ("id".into(), DataType::Int64),
            ("region".into(), DataType::Utf8),
            ("amount".into(), DataType::Float64),
            ("day".into(), DataType::Date32),
        ]
    );
    let ids: Vec<i64> = batches
        .iter()
        .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
        .collect();
    assert_eq!(ids, vec![1, 2, 3]);
    let regions: Vec<String> = batches
        .iter()
        .flat_map(|b| {
            let column = b.column(1).as_string::<i32>();
            (0..column.len())
                .map(|i| column.value(i).to_owned())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(regions, vec!["north", "south", "north"]);

    let (status, _, bytes) = api.get_raw("/api/datasets/trips/download", None).await;
    assert_eq!(status, 200);
    let batches = read_ipc(&bytes);
    assert!(batches.len() > 1, "streamed in several batches");
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 30_000);
    assert_eq!(batches[0].schema().field(0).name(), "trip_id");

    let (status, problem): (u16, Value) = api.get("/api/datasets/nope/download").await;
    assert_eq!(status, 404, "{problem}");
    assert!(problem["error_id"].is_string(), "{problem}");
    assert!(
        problem["detail"].as_str().unwrap().contains("nope"),
        "{problem}"
    );
}
