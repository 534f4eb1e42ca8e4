//! How a running query's progress reads, so a long query never looks
//! frozen: DuckDB's percentage when it has an estimate, and always the
//! elapsed time and the rows read or produced so far when DuckDB counts them.

use crate::grid::group_digits;
use crate::offline::engine::Progress;

/// The line under the progress bar.
pub fn describe(progress: &Progress) -> String {
    let mut parts = Vec::new();
    if let Some(percent) = progress.percent {
        parts.push(format!("{percent:.0}%"));
    }
    match (progress.rows_read, progress.rows_total) {
        (Some(read), Some(total)) if total > 0 => parts.push(format!(
            "{} of {} rows read",
            group_digits(&read.to_string()),
            group_digits(&total.to_string())
        )),
        (Some(read), _) => parts.push(format!("{} rows read", group_digits(&read.to_string()))),
        _ => {}
    }
    if let Some(returned) = progress.rows_returned.filter(|&n| n > 0) {
        parts.push(format!("{} rows out", group_digits(&returned.to_string())));
    }
    if parts.is_empty() {
        parts.push("running".to_owned());
    }
    parts.push(elapsed(progress.elapsed_ms));
    parts.join(" · ")
}

/// The bar's fill, 0 to 100, when there is something to fill it with:
/// DuckDB's estimate, else the share of rows read.
pub fn fill(progress: &Progress) -> Option<f64> {
    progress.percent.or_else(|| {
        let (read, total) = (progress.rows_read?, progress.rows_total?);
        (total > 0).then(|| (read as f64 / total as f64 * 100.0).min(100.0))
    })
}

/// `850 ms`, `12.3 s`, `2 min 05 s`.
pub fn elapsed(ms: u64) -> String {
    match ms {
        0..=999 => format!("{ms} ms"),
        1_000..=59_999 => format!("{:.1} s", ms as f64 / 1000.0),
        _ => format!("{} min {:02} s", ms / 60_000, (ms % 60_000) / 1000),
    }
}

#[cfg(test)]
mod tests {
    use shared_domain::QueryId;
    use uuid::Uuid;

    use super::*;

    fn progress(percent: Option<f64>, elapsed_ms: u64) -> Progress {
        Progress {
            query_id: QueryId(Uuid::nil()),
            percent,
            elapsed_ms,
            rows_read: None,
            rows_total: None,
            rows_returned: None,
        }
    }

    #[test]
    fn without_an_estimate_the_rows_read_and_the_time_still_move() {
        let mut p = progress(None, 12_345);
        assert_eq!(describe(&p), "running · 12.3 s");
        p.rows_read = Some(1_234_567);
        assert_eq!(describe(&p), "1,234,567 rows read · 12.3 s");
        p.rows_total = Some(60_000_000);
        assert_eq!(describe(&p), "1,234,567 of 60,000,000 rows read · 12.3 s");
        assert_eq!(fill(&p).map(|f| (f * 100.0).round() / 100.0), Some(2.06));
        p.rows_returned = Some(10);
        assert!(describe(&p).contains("10 rows out"), "{}", describe(&p));
    }

    #[test]
    fn an_estimate_comes_first_and_fills_the_bar() {
        let mut p = progress(Some(41.6), 850);
        p.rows_read = Some(10);
        p.rows_total = Some(1000);
        assert_eq!(describe(&p), "42% · 10 of 1,000 rows read · 850 ms");
        assert_eq!(fill(&p), Some(41.6));
        assert_eq!(fill(&progress(None, 5)), None);
    }

    #[test]
    fn elapsed_time_reads_in_the_unit_that_fits() {
        assert_eq!(elapsed(0), "0 ms");
        assert_eq!(elapsed(999), "999 ms");
        assert_eq!(elapsed(1_000), "1.0 s");
        assert_eq!(elapsed(59_999), "60.0 s");
        assert_eq!(elapsed(125_000), "2 min 05 s");
    }
}
