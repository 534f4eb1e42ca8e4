//! Downloads of local results, made in this tab (their rows never left
//! it): CSV of the rows kept in the tab, and Parquet of the whole result
//! (the query runs again in duckdb-wasm; parquet-wasm writes the file).

use shared_domain::QueryId;
use wasm_bindgen::JsCast;

use crate::grid;

/// Saves `parts` (strings or byte arrays) as a download named `file_name`.
fn save(file_name: &str, mime: &str, parts: &js_sys::Array) -> Result<(), String> {
    let options = web_sys::BlobPropertyBag::new();
    options.set_type(mime);
    let blob = web_sys::Blob::new_with_str_sequence_and_options(parts, &options)
        .map_err(|e| crate::bundles::message(&e))?;
    let url = web_sys::Url::create_object_url_with_blob(&blob)
        .map_err(|e| crate::bundles::message(&e))?;
    let document = web_sys::window()
        .and_then(|w| w.document())
        .ok_or("no document")?;
    let link: web_sys::HtmlAnchorElement = document
        .create_element("a")
        .map_err(|e| crate::bundles::message(&e))?
        .unchecked_into();
    link.set_href(&url);
    link.set_download(file_name);
    link.click();
    let _ = web_sys::Url::revoke_object_url(&url);
    Ok(())
}

/// Downloads the kept rows of local query `query_id` as CSV.
pub fn local_csv(query_id: QueryId) {
    let Some(result) = crate::duckdb::runner::kept_result(query_id) else {
        crate::offline::engine::engine()
            .report_input("the rows of this local query are not in this tab: run it again");
        return;
    };
    let names: Vec<String> = result.columns.iter().map(|c| c.name.clone()).collect();
    let csv = grid::to_csv(&names, &result.rows);
    let parts = js_sys::Array::of1(&wasm_bindgen::JsValue::from_str(&csv));
    if let Err(error) = save(&format!("{query_id}.csv"), "text/csv", &parts) {
        crate::offline::engine::engine().report_input(format!("CSV export failed: {error}"));
    }
}

/// Downloads the whole result of local query `query_id` (its SQL `sql`) as
/// Parquet: every row with DuckDB's exact types. `busy` is set meanwhile.
pub fn local_parquet(query_id: QueryId, sql: String, busy: leptos::prelude::RwSignal<bool>) {
    use leptos::prelude::Set;
    busy.set(true);
    leptos::task::spawn_local(async move {
        let outcome = match crate::duckdb::runner::parquet(&sql).await {
            Ok(bytes) => save(
                &format!("{query_id}.parquet"),
                "application/vnd.apache.parquet",
                &js_sys::Array::of1(&bytes),
            ),
            Err(error) => Err(error.to_string()),
        };
        busy.set(false);
        if let Err(error) = outcome {
            crate::offline::engine::engine()
                .report_input(format!("Parquet export failed: {error}"));
        }
    });
}
