//! The sessions list's pure decisions, tested natively: search over titles
//! and SQL, most recently changed first, and last activity as text.

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// What the list knows of one session.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub id: Uuid,
    pub title: String,
    /// The SQL of every query of the session.
    pub sql: Vec<String>,
    /// When the newest confirmed event was recorded (None: none held yet).
    pub last_activity: Option<DateTime<Utc>>,
    /// Changes made here that the server has not confirmed: the newest of all.
    pub pending: bool,
}

/// Whether `entry` matches the search `query` (case-insensitive, in the
/// title or any query's SQL; every word must match somewhere).
pub fn matches(entry: &Entry, query: &str) -> bool {
    let title = entry.title.to_lowercase();
    let sql: Vec<String> = entry.sql.iter().map(|s| s.to_lowercase()).collect();
    query
        .to_lowercase()
        .split_whitespace()
        .all(|word| title.contains(word) || sql.iter().any(|s| s.contains(word)))
}

/// The ids of the entries matching `query`, most recently changed first
/// (pending changes first, then by last activity, sessions without any
/// held event next, then by title for equal times).
pub fn ordered(entries: &[Entry], query: &str) -> Vec<Uuid> {
    let mut shown: Vec<&Entry> = entries.iter().filter(|e| matches(e, query)).collect();
    shown.sort_by(|a, b| {
        b.pending
            .cmp(&a.pending)
            .then_with(|| match (a.last_activity, b.last_activity) {
                (Some(x), Some(y)) => y.cmp(&x),
                (None, Some(_)) => std::cmp::Ordering::Less,
                (Some(_), None) => std::cmp::Ordering::Greater,
                (None, None) => std::cmp::Ordering::Equal,
            })
            .then_with(|| a.title.to_lowercase().cmp(&b.title.to_lowercase()))
    });
    shown.into_iter().map(|e| e.id).collect()
}

/// `then` relative to `now`: "just now", "5 min ago", "3 h ago", "2 days
/// ago", else the date.
pub fn relative_time(now: DateTime<Utc>, then: DateTime<Utc>) -> String {
    let seconds = (now - then).num_seconds().max(0);
    match seconds {
        0..=59 => "just now".to_owned(),
        60..=3_599 => format!("{} min ago", seconds / 60),
        3_600..=86_399 => format!("{} h ago", seconds / 3_600),
        86_400..=604_799 => {
            let days = seconds / 86_400;
            format!("{days} day{} ago", if days == 1 { "" } else { "s" })
        }
        _ => then.format("%Y-%m-%d").to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(seconds: i64) -> Option<DateTime<Utc>> {
        Some(Utc.timestamp_opt(1_700_000_000 + seconds, 0).unwrap())
    }

    fn entry(
        n: u128,
        title: &str,
        sql: &[&str],
        last: Option<DateTime<Utc>>,
        pending: bool,
    ) -> Entry {
        Entry {
            id: Uuid::from_u128(n),
            title: title.into(),
            sql: sql.iter().map(|s| (*s).to_owned()).collect(),
            last_activity: last,
            pending,
        }
    }

    #[test]
    fn newest_first_with_pending_and_unheld_on_top() {
        let entries = vec![
            entry(1, "Old", &[], at(10), false),
            entry(2, "New", &[], at(20), false),
            entry(3, "Offline draft", &[], None, false),
            entry(4, "Edited here", &[], at(5), true),
        ];
        let ids: Vec<u128> = ordered(&entries, "")
            .iter()
            .map(|id| id.as_u128())
            .collect();
        assert_eq!(ids, vec![4, 3, 2, 1]);
    }

    #[test]
    fn search_looks_at_titles_and_sql_word_by_word() {
        let entries = vec![
            entry(1, "Revenue Q3", &["SELECT * FROM sales"], at(1), false),
            entry(2, "Taxi", &["SELECT borough FROM demo"], at(2), false),
        ];
        let found =
            |q: &str| -> Vec<u128> { ordered(&entries, q).iter().map(|i| i.as_u128()).collect() };
        assert_eq!(found("revenue"), vec![1]);
        assert_eq!(found("BOROUGH"), vec![2]);
        assert_eq!(found("select taxi"), vec![2]);
        assert_eq!(found("nothing"), Vec::<u128>::new());
        assert_eq!(found("  "), vec![2, 1]);
    }

    #[test]
    fn activity_reads_as_relative_time() {
        let now = at(1_000_000).unwrap();
        assert_eq!(relative_time(now, now), "just now");
        assert_eq!(
            relative_time(now, now - chrono::Duration::minutes(5)),
            "5 min ago"
        );
        assert_eq!(
            relative_time(now, now - chrono::Duration::hours(3)),
            "3 h ago"
        );
        assert_eq!(
            relative_time(now, now - chrono::Duration::days(1)),
            "1 day ago"
        );
        assert_eq!(
            relative_time(now, now - chrono::Duration::days(30)),
            "2023-10-27"
        );
    }
}
