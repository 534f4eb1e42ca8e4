//! How a query's result is charted: saved with the query by
//! `ConfigureChart` / `ChartConfigured` (version 1), so a chart syncs and
//! replays like everything else. The chart's data is an aggregation over
//! the whole result, which these settings describe; the engine that ran the
//! query computes it.

use serde::{Deserialize, Serialize};

/// The mark a chart draws.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChartKind {
    /// One bar per `x` value (categories).
    Bar,
    /// A line along `x` (numbers or time), one per `color`.
    Line,
    /// Dots at (`x` bin, aggregated `y`).
    Scatter,
    /// Row counts of `x` in `bins` equal-width bins.
    Histogram,
}

/// How the rows of one group become the plotted value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChartAggregate {
    Count,
    Sum,
    Avg,
    Min,
    Max,
}

impl ChartAggregate {
    /// The SQL function (and the structured result API's name).
    pub fn name(self) -> &'static str {
        match self {
            ChartAggregate::Count => "count",
            ChartAggregate::Sum => "sum",
            ChartAggregate::Avg => "avg",
            ChartAggregate::Min => "min",
            ChartAggregate::Max => "max",
        }
    }
}

/// A chart of one query's whole result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChartSettings {
    pub kind: ChartKind,
    /// The column along the horizontal axis.
    pub x: String,
    pub aggregate: ChartAggregate,
    /// The column aggregated (none for `count`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
    /// A column whose values split the data into coloured series.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub color: Option<String>,
    /// Equal-width bins of a numeric `x` (histograms, scatter plots).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bins: Option<u32>,
}

/// The most bins a chart may ask for.
pub const MAX_BINS: u32 = 1_000;

impl ChartSettings {
    /// Why these settings cannot chart a result with `columns`, if they cannot.
    pub fn problem(&self, columns: &[crate::values::Column]) -> Option<String> {
        let known = |name: &str| columns.iter().any(|c| c.name == name);
        let named = [Some(&self.x), self.y.as_ref(), self.color.as_ref()];
        if let Some(missing) = named.into_iter().flatten().find(|name| !known(name)) {
            return Some(format!("the result has no column {missing:?}"));
        }
        if self.aggregate != ChartAggregate::Count && self.y.is_none() {
            return Some(format!("{} needs a value column", self.aggregate.name()));
        }
        if let Some(bins) = self.bins {
            if bins == 0 || bins > MAX_BINS {
                return Some(format!("bins must be between 1 and {MAX_BINS}"));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;
    use crate::session::{QuerySession, SessionCommand as C, SessionError, SessionEvent as E};
    use crate::testing::given;
    use crate::values::{Engine, QueryId, SessionTitle, SqlQuery};

    fn qid() -> QueryId {
        QueryId(Uuid::from_u128(1))
    }

    /// A session whose query 1 completed with columns `borough` and `fare`
    /// (built from JSON so it reads the same whatever optional fields
    /// `QueryCompleted` gains).
    fn completed() -> Vec<E> {
        let done: E = serde_json::from_value(serde_json::json!({
            "type": "QueryCompleted",
            "query_id": qid(),
            "row_count": 1000,
            "columns": [{"name": "borough", "type": "VARCHAR"}, {"name": "fare", "type": "DOUBLE"}],
            "elapsed_ms": 5,
        }))
        .unwrap();
        vec![
            E::SessionCreated {
                title: SessionTitle::new("Charts").unwrap(),
                owner: crate::access::UserId::OWNER,
            },
            E::QuerySubmitted {
                query_id: qid(),
                sql: SqlQuery::new("SELECT * FROM demo").unwrap(),
                engine: Engine::Server,
            },
            E::QueryStarted { query_id: qid() },
            done,
        ]
    }

    fn bars() -> ChartSettings {
        ChartSettings {
            kind: ChartKind::Bar,
            x: "borough".into(),
            aggregate: ChartAggregate::Sum,
            y: Some("fare".into()),
            color: None,
            bins: None,
        }
    }

    #[test]
    fn a_completed_query_keeps_its_chart_settings() {
        let state = given::<QuerySession>(completed())
            .when(C::ConfigureChart {
                query_id: qid(),
                chart: bars(),
            })
            .then_expect_events([E::ChartConfigured {
                query_id: qid(),
                chart: bars(),
            }]);
        assert_eq!(state.query(qid()).unwrap().chart, Some(bars()));
        // The same settings again: nothing new happens.
        let mut events = completed();
        events.push(E::ChartConfigured {
            query_id: qid(),
            chart: bars(),
        });
        given::<QuerySession>(events)
            .when(C::ConfigureChart {
                query_id: qid(),
                chart: bars(),
            })
            .then_expect_events([]);
    }

    #[test]
    fn charts_name_existing_columns_of_completed_queries() {
        let mut unknown = bars();
        unknown.color = Some("nope".into());
        given::<QuerySession>(completed())
            .when(C::ConfigureChart {
                query_id: qid(),
                chart: unknown,
            })
            .then_expect_error(SessionError::InvalidChart(
                "the result has no column \"nope\"".into(),
            ));
        let mut no_value = bars();
        no_value.y = None;
        assert!(no_value.problem(&[]).is_some());
        let mut too_many = bars();
        too_many.bins = Some(MAX_BINS + 1);
        given::<QuerySession>(completed())
            .when(C::ConfigureChart {
                query_id: qid(),
                chart: too_many,
            })
            .then_expect_error(SessionError::InvalidChart(
                "bins must be between 1 and 1000".into(),
            ));
        let events = completed()[..2].to_vec();
        given::<QuerySession>(events)
            .when(C::ConfigureChart {
                query_id: qid(),
                chart: bars(),
            })
            .then_expect_error(SessionError::QueryNotCompleted(qid()));
        given::<QuerySession>(completed())
            .when(C::ConfigureChart {
                query_id: QueryId(Uuid::from_u128(9)),
                chart: bars(),
            })
            .then_expect_error(SessionError::UnknownQuery(QueryId(Uuid::from_u128(9))));
    }

    #[test]
    fn counts_need_no_value_column_the_others_do_and_bins_stay_in_bounds() {
        let columns: Vec<crate::values::Column> = serde_json::from_value(serde_json::json!([
            {"name": "borough", "type": "VARCHAR"}, {"name": "fare", "type": "DOUBLE"}
        ]))
        .unwrap();
        let mut count = bars();
        count.aggregate = ChartAggregate::Count;
        count.y = None;
        assert_eq!(count.problem(&columns), None);
        let mut no_value = bars();
        no_value.y = None;
        assert_eq!(
            no_value.problem(&columns).as_deref(),
            Some("sum needs a value column")
        );
        for (bins, allowed) in [
            (0, false),
            (1, true),
            (MAX_BINS, true),
            (MAX_BINS + 1, false),
        ] {
            let mut binned = bars();
            binned.bins = Some(bins);
            assert_eq!(binned.problem(&columns).is_none(), allowed, "{bins} bins");
        }
        let names = [
            ChartAggregate::Count,
            ChartAggregate::Sum,
            ChartAggregate::Avg,
            ChartAggregate::Min,
            ChartAggregate::Max,
        ]
        .map(ChartAggregate::name);
        assert_eq!(names, ["count", "sum", "avg", "min", "max"]);
    }

    #[test]
    fn the_event_is_version_1_and_reads_back_from_its_json() {
        use crate::aggregate::{Aggregate, DomainEvent};
        let event = E::ChartConfigured {
            query_id: qid(),
            chart: bars(),
        };
        assert_eq!(event.event_type(), "ChartConfigured");
        assert_eq!(E::current_version("ChartConfigured"), Some(1));
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(
            json["chart"],
            serde_json::json!({"kind": "bar", "x": "borough", "aggregate": "sum", "y": "fare"})
        );
        let back = QuerySession::upcaster()
            .decode::<E>("ChartConfigured", 1, json)
            .unwrap();
        assert_eq!(back, event);
    }
}
