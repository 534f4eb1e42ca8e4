//! The bindings against the real duckdb-wasm in headless Chromium
//! (`wasm-bindgen-test-runner`, which serves the crate directory, so the
//! generated `client/duckdb-wasm/` is at the same `/duckdb-wasm/` path as in
//! the app). Run by `cargo xtask test` (see `xtask/src/test.rs`).

use serde_json::{json, Value};
use shared_domain::Column;
use wasm_bindgen_test::*;

use super::engine::{bridge, LocalDb, LocalError};

wasm_bindgen_test_configure!(run_in_browser);

async fn db() -> std::rc::Rc<LocalDb> {
    LocalDb::shared().await.expect("duckdb-wasm starts")
}

#[wasm_bindgen_test]
async fn starts_the_exception_handling_build_of_duckdb_1_4_3_offline() {
    let db = db().await;
    assert_eq!(db.bundle(), "eh");
    assert_eq!(db.version().await.unwrap(), "v1.4.3");
    let rows = db
        .execute(
            "SELECT current_setting('autoload_known_extensions'), \
             current_setting('autoinstall_known_extensions')",
        )
        .await
        .unwrap();
    assert_eq!(rows, vec![vec![json!(false), json!(false)]]);
}

#[wasm_bindgen_test]
async fn results_carry_duckdb_types_and_the_servers_json_conventions() {
    let db = db().await;
    let result = db
        .query(
            "SELECT 1::BIGINT AS n, 123.45::DECIMAL(10,2) AS amount, DATE '2024-03-01' AS day, \
             TIMESTAMP '2024-03-01 12:34:56' AS at, TIMESTAMP '2024-03-01 12:34:56.5' AS at_ms, \
             'x' AS s, 2::HUGEINT AS h, (1::BIGINT << 60) AS big, 1.5::DOUBLE AS f, \
             NULL::INTEGER AS nothing, true AS yes;",
        )
        .await
        .unwrap();
    let types: Vec<Column> = [
        ("n", "BIGINT"),
        ("amount", "DECIMAL(10,2)"),
        ("day", "DATE"),
        ("at", "TIMESTAMP"),
        ("at_ms", "TIMESTAMP"),
        ("s", "VARCHAR"),
        ("h", "HUGEINT"),
        ("big", "BIGINT"),
        ("f", "DOUBLE"),
        ("nothing", "INTEGER"),
        ("yes", "BOOLEAN"),
    ]
    .into_iter()
    .map(|(n, t)| Column::new(n, t))
    .collect();
    assert_eq!(result.columns, types);
    assert_eq!(result.total_rows, 1);
    assert_eq!(
        result.rows,
        vec![vec![
            json!(1),
            json!("123.45"),
            json!("2024-03-01"),
            json!("2024-03-01T12:34:56"),
            json!("2024-03-01T12:34:56.500"),
            json!("x"),
            json!("2"),
            json!((1u64 << 60).to_string()),
            json!(1.5),
            Value::Null,
            json!(true),
        ]]
    );
}

#[wasm_bindgen_test]
async fn rows_are_counted_beyond_the_kept_ones_and_keep_their_order() {
    let db = db().await;
    let result = db
        .query("SELECT i FROM range(25000) t(i) ORDER BY i DESC")
        .await
        .unwrap();
    assert_eq!(result.total_rows, 25_000);
    assert_eq!(result.rows.len(), super::engine::MAX_KEPT_ROWS as usize);
    assert_eq!(result.rows[0], vec![json!(24999)]);
    assert_eq!(result.rows[9999], vec![json!(15000)]);
}

#[wasm_bindgen_test]
async fn a_registered_csv_buffer_is_queryable() {
    let db = db().await;
    db.register_buffer(
        "trips_test.csv",
        b"city,amount\nOslo,10.5\nRome,2\nOslo,1.5\n",
    )
    .await
    .unwrap();
    let result = db
        .query(
            "SELECT city, sum(amount) AS total, count(*) AS n \
             FROM read_csv('trips_test.csv') GROUP BY city ORDER BY city",
        )
        .await
        .unwrap();
    assert_eq!(
        result.columns,
        vec![
            Column::new("city", "VARCHAR"),
            Column::new("total", "DOUBLE"),
            Column::new("n", "BIGINT")
        ]
    );
    assert_eq!(
        result.rows,
        vec![
            vec![json!("Oslo"), json!(12.0), json!(2)],
            vec![json!("Rome"), json!(2.0), json!(1)]
        ]
    );
    db.drop_file("trips_test.csv").await.unwrap();
}

#[wasm_bindgen_test]
async fn json_files_load_through_the_js_api_without_extensions() {
    let db = db().await;
    db.register_buffer(
        "people_test.json",
        br#"[{"name":"Ada","age":36},{"name":"Alan","age":41}]"#,
    )
    .await
    .unwrap();
    db.insert_json_file("people_test", "people_test.json")
        .await
        .unwrap();
    let result = db
        .query("SELECT name, age FROM people_test ORDER BY age")
        .await
        .unwrap();
    assert_eq!(
        result.rows,
        vec![
            vec![json!("Ada"), json!(36)],
            vec![json!("Alan"), json!(41)]
        ]
    );
}

#[wasm_bindgen_test]
async fn errors_carry_duckdb_messages_and_anything_but_one_query_is_refused() {
    let db = db().await;
    let LocalError::Duck(message) = db.query("SELECT no_such_column").await.unwrap_err() else {
        panic!("expected a DuckDB error");
    };
    assert!(message.contains("Binder Error"), "{message}");
    assert!(message.contains("no_such_column"), "{message}");
    for refused in [
        "CREATE TABLE sneaky AS SELECT 1",
        "SELECT 1; CREATE TABLE sneaky AS SELECT 1",
        "INSTALL httpfs",
    ] {
        match db.query(refused).await {
            Err(LocalError::Duck(message)) => assert!(
                message.contains(" Error: ") && !message.starts_with('{'),
                "{refused}: {message}"
            ),
            other => panic!("{refused} was not refused: {other:?}"),
        }
    }
    let tables = db
        .execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'sneaky'")
        .await
        .unwrap();
    assert_eq!(tables, vec![vec![json!(0)]]);
    // The connection still works after errors.
    assert_eq!(
        db.query("SELECT 42 AS answer").await.unwrap().rows,
        vec![vec![json!(42)]]
    );
}

#[wasm_bindgen_test]
async fn a_long_query_is_cancelled_and_the_connection_stays_usable() {
    let db = db().await;
    let long = db.query(
        "SELECT count(*) FROM range(1000000) a, range(1000000) b WHERE (a.range + b.range) % 7 = 3",
    );
    let cancel = async {
        gloo_timers::future::TimeoutFuture::new(500).await;
        assert!(db.is_running());
        let started = js_sys::Date::now();
        db.cancel().await.unwrap();
        started
    };
    let (outcome, cancel_started) = futures::join!(long, cancel);
    let took = js_sys::Date::now() - cancel_started;
    assert_eq!(outcome, Err(LocalError::Cancelled));
    assert!(took < 1000.0, "cancel took {took} ms");
    assert_eq!(
        db.query("SELECT 7 AS n").await.unwrap().rows,
        vec![vec![json!(7)]]
    );
}

#[wasm_bindgen_test]
async fn the_local_store_keeps_files_in_opfs() {
    let module = bridge().await.unwrap();
    let bytes = js_sys::Uint8Array::from(&b"a,b\n1,2\n"[..]);
    module
        .store_save("store_test.csv", &bytes.into())
        .await
        .unwrap();
    let listed = module.store_list().await.unwrap();
    assert!(
        listed.contains(r#"{"file_name":"store_test.csv","size_bytes":8}"#),
        "{listed}"
    );
    let file = module.store_load("store_test.csv").await.unwrap();
    assert_eq!(file.size(), 8.0);
    module.store_delete("store_test.csv").await.unwrap();
    assert!(!module
        .store_list()
        .await
        .unwrap()
        .contains("store_test.csv"));
}
