//! Result charts as SVG text: pure functions from result rows to markup, so
//! they are tested natively. Bars or a line of one numeric column against
//! another column's labels.

use std::fmt::Write;

use serde_json::Value;

/// The most points a chart draws (the first rows of the page).
pub const MAX_POINTS: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChartKind {
    Bar,
    Line,
}

impl ChartKind {
    pub fn parse(raw: &str) -> Self {
        if raw == "line" {
            ChartKind::Line
        } else {
            ChartKind::Bar
        }
    }
}

/// A value as a number: JSON numbers and numeric strings (big integers and
/// decimals arrive as strings).
pub fn numeric(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok().filter(|v| v.is_finite()),
        _ => None,
    }
}

/// Labels and values of the chart: column `x` as labels, column `y` as
/// values; rows whose `y` is not a number are skipped.
pub fn series(rows: &[Vec<Value>], x: usize, y: usize) -> Vec<(String, f64)> {
    rows.iter()
        .filter_map(|row| {
            let value = numeric(row.get(y)?)?;
            let label = match row.get(x)? {
                Value::String(s) => s.clone(),
                Value::Null => "NULL".to_owned(),
                other => other.to_string(),
            };
            Some((label, value))
        })
        .take(MAX_POINTS)
        .collect()
}

/// Which columns can be values: those with a number in the first row that has one.
pub fn numeric_columns(rows: &[Vec<Value>], columns: usize) -> Vec<usize> {
    (0..columns)
        .filter(|&c| {
            rows.iter()
                .any(|row| row.get(c).and_then(numeric).is_some())
        })
        .collect()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn short(label: &str) -> String {
    if label.chars().count() > 12 {
        format!("{}…", label.chars().take(11).collect::<String>())
    } else {
        label.to_owned()
    }
}

fn format_tick(value: f64) -> String {
    if value.abs() >= 1e6 || (value != 0.0 && value.abs() < 1e-2) {
        format!("{value:.2e}")
    } else if value.fract() == 0.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.2}")
    }
}

/// A round step at least `raw`: 1, 2, 2.5 or 5 times a power of ten.
fn nice_step(raw: f64) -> f64 {
    if raw.is_nan() || raw <= 0.0 || raw.is_infinite() {
        return 1.0;
    }
    let magnitude = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|step| *step >= raw * 0.999_999)
        .unwrap_or(10.0 * magnitude)
}

/// The chart as an `<svg>` element of `width` × `height` user units.
pub fn svg(points: &[(String, f64)], kind: ChartKind, width: f64, height: f64) -> String {
    let (left, right, top, bottom) = (64.0, 12.0, 12.0, 44.0);
    let plot_w = width - left - right;
    let plot_h = height - top - bottom;
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="chart" data-testid="chart" data-points="{}" viewBox="0 0 {width} {height}" role="img">"#,
        points.len()
    );
    if points.is_empty() {
        let _ = write!(
            out,
            r#"<text x="{}" y="{}" text-anchor="middle" class="chart-empty">No numeric values to chart</text></svg>"#,
            width / 2.0,
            height / 2.0
        );
        return out;
    }
    let max = points.iter().map(|p| p.1).fold(f64::MIN, f64::max).max(0.0);
    let min = points.iter().map(|p| p.1).fold(f64::MAX, f64::min).min(0.0);
    // Round ticks: the axis spans whole steps of 1, 2, 2.5 or 5 × 10^k.
    let step = nice_step((max - min) / 4.0);
    let (min, max) = ((min / step).floor() * step, (max / step).ceil() * step);
    let span = if max - min == 0.0 { 1.0 } else { max - min };
    let ticks = (span / step).round() as u32;
    let y_of = |v: f64| top + plot_h - (v - min) / span * plot_h;
    // Grid and ticks.
    for i in 0..=ticks {
        let value = min + step * f64::from(i);
        let y = y_of(value);
        let _ = write!(
            out,
            r#"<line class="chart-grid" x1="{left}" x2="{}" y1="{y:.1}" y2="{y:.1}"/><text class="chart-tick" x="{}" y="{:.1}" text-anchor="end">{}</text>"#,
            left + plot_w,
            left - 6.0,
            y + 4.0,
            escape(&format_tick(value))
        );
    }
    let step = plot_w / points.len() as f64;
    let label_every = (points.len() / 12).max(1);
    for (i, (label, value)) in points.iter().enumerate() {
        let cx = left + step * (i as f64 + 0.5);
        if i % label_every == 0 {
            let _ = write!(
                out,
                r#"<text class="chart-label" x="{cx:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                top + plot_h + 16.0,
                escape(&short(label))
            );
        }
        if kind == ChartKind::Bar {
            let (y0, y1) = (y_of(0.0), y_of(*value));
            let _ = write!(
                out,
                r#"<rect class="chart-bar" data-testid="chart-bar" x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}"><title>{}: {}</title></rect>"#,
                cx - step * 0.4,
                y0.min(y1),
                step * 0.8,
                (y0 - y1).abs().max(0.5),
                escape(label),
                value
            );
        }
    }
    if kind == ChartKind::Line {
        let path: Vec<String> = points
            .iter()
            .enumerate()
            .map(|(i, (_, v))| {
                format!(
                    "{},{}",
                    (left + step * (i as f64 + 0.5)).round(),
                    y_of(*v).round()
                )
            })
            .collect();
        let _ = write!(
            out,
            r#"<polyline class="chart-line" data-testid="chart-line" fill="none" points="{}"/>"#,
            path.join(" ")
        );
    }
    let _ = write!(
        out,
        r#"<line class="chart-axis" x1="{left}" x2="{}" y1="{:.1}" y2="{:.1}"/></svg>"#,
        left + plot_w,
        y_of(0.0),
        y_of(0.0)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn series_takes_numbers_and_numeric_strings_and_skips_the_rest() {
        let rows = vec![
            vec![json!("a"), json!(1)],
            vec![json!("b"), json!("2.5")],
            vec![json!("c"), json!(null)],
            vec![json!(4), json!("x")],
        ];
        assert_eq!(
            series(&rows, 0, 1),
            vec![("a".to_owned(), 1.0), ("b".to_owned(), 2.5)]
        );
        assert_eq!(numeric_columns(&rows, 2), vec![0, 1]);
    }

    #[test]
    fn bars_scale_to_the_largest_value_and_labels_are_escaped() {
        let points = vec![("<x>".to_owned(), 10.0), ("y".to_owned(), 5.0)];
        let svg = svg(&points, ChartKind::Bar, 600.0, 300.0);
        assert_eq!(svg.matches("data-testid=\"chart-bar\"").count(), 2);
        assert!(svg.contains("&lt;x&gt;"));
        assert!(!svg.contains("<x>"));
        // The taller bar is twice the shorter one (plot height 244).
        assert!(svg.contains("height=\"244.0\""), "{svg}");
        assert!(svg.contains("height=\"122.0\""), "{svg}");
        let line = super::svg(&points, ChartKind::Line, 600.0, 300.0);
        assert!(line.contains("chart-line") && !line.contains("chart-bar"));
    }

    #[test]
    fn ticks_are_round_numbers() {
        assert_eq!(nice_step(1500.25), 2000.0);
        assert_eq!(nice_step(2.5), 2.5);
        assert_eq!(nice_step(0.03), 0.05);
        let svg = svg(&[("a".to_owned(), 6001.0)], ChartKind::Bar, 600.0, 300.0);
        assert!(svg.contains(">8000<") && svg.contains(">2000<"), "{svg}");
        assert!(!svg.contains("4500.75"));
    }

    #[test]
    fn an_empty_series_says_so() {
        assert!(svg(&[], ChartKind::Bar, 100.0, 100.0).contains("No numeric values"));
    }
}
