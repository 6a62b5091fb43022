//! Charts as inline SVG, drawn on the server: no script, no library, nothing fetched. Each
//! chart is a figure with a caption saying what its series cover, an `aria-label` naming the
//! latest values, and a legend; colours are the Okabe–Ito palette (told apart with colour
//! blindness) and presentation attributes only (the Content-Security-Policy allows no inline
//! style).

use std::fmt::Write as _;

use chrono::{DateTime, Utc};

use super::html::esc;

/// Series colours, in order.
const PALETTE: [&str; 7] = [
    "#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000",
];

const WIDTH: f64 = 600.0;
const HEIGHT: f64 = 190.0;
const LEFT: f64 = 52.0;
const RIGHT: f64 = 592.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 160.0;

/// One line of a chart: its points are (time, value), oldest first.
pub struct Series {
    pub label: String,
    pub points: Vec<(DateTime<Utc>, f64)>,
}

/// A chart's text.
pub struct Chart<'a> {
    /// The figure's id (for links and tests).
    pub id: &'a str,
    pub title: &'a str,
    /// What the series cover (which samples, since when).
    pub caption: &'a str,
    /// The values' unit, after each number in the legend (`""`, `" s"`).
    pub unit: &'a str,
}

/// The smallest of 1, 2, 5 × 10ⁿ at or above `max` (at least 1).
fn nice_max(max: f64) -> f64 {
    if max <= 1.0 {
        return 1.0;
    }
    let magnitude = 10f64.powf(max.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|m| *m >= max)
        .unwrap_or(max)
}

fn number(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// A line chart over time of `series` between `from` and `to`.
pub fn line_chart(
    chart: &Chart<'_>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    series: &[Series],
) -> String {
    let span = (to - from).num_seconds().max(1) as f64;
    let max = series
        .iter()
        .flat_map(|s| s.points.iter().map(|(_, v)| *v))
        .fold(0.0, f64::max);
    let top = nice_max(max);
    let x = |at: DateTime<Utc>| {
        let offset = (at - from).num_seconds() as f64;
        LEFT + (RIGHT - LEFT) * (offset / span).clamp(0.0, 1.0)
    };
    let y = |v: f64| BOTTOM - (BOTTOM - TOP) * (v / top).clamp(0.0, 1.0);
    let latest: Vec<String> = series
        .iter()
        .map(|s| {
            let value = s.points.last().map_or(0.0, |(_, v)| *v);
            format!("{} {}{}", s.label, number(value), chart.unit)
        })
        .collect();
    let mut out = String::new();
    let _ = write!(
        out,
        "<figure class=\"chart\" id=\"{id}\"><figcaption><strong>{title}</strong> \
         <span class=\"help\">{caption}</span></figcaption>\
         <svg viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=\"img\" aria-label=\"{title}, latest: {latest}\" \
         focusable=\"false\">",
        id = esc(chart.id),
        title = esc(chart.title),
        caption = esc(chart.caption),
        latest = esc(&latest.join(", ")),
    );
    // Grid lines and the value axis: 0, half, top.
    for fraction in [0.0, 0.5, 1.0] {
        let value = top * fraction;
        let at = y(value);
        let _ = write!(
            out,
            "<line x1=\"{LEFT}\" x2=\"{RIGHT}\" y1=\"{at:.1}\" y2=\"{at:.1}\" stroke=\"#d0d7de\" \
             stroke-width=\"1\"/><text x=\"{lx}\" y=\"{ty:.1}\" text-anchor=\"end\" \
             font-size=\"11\" fill=\"#57606a\">{label}{unit}</text>",
            lx = LEFT - 6.0,
            ty = at + 4.0,
            label = number(value),
            unit = esc(chart.unit),
        );
    }
    // The time axis: its two ends.
    for (at, anchor) in [(from, "start"), (to, "end")] {
        let _ = write!(
            out,
            "<text x=\"{tx:.1}\" y=\"{ty}\" text-anchor=\"{anchor}\" font-size=\"11\" \
             fill=\"#57606a\">{label}</text>",
            tx = x(at),
            ty = BOTTOM + 18.0,
            label = at.format("%d %b %H:%M"),
        );
    }
    for (i, s) in series.iter().enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        let points: Vec<String> = s
            .points
            .iter()
            .map(|(at, v)| format!("{:.1},{:.1}", x(*at), y(*v)))
            .collect();
        if points.len() > 1 {
            let _ = write!(
                out,
                "<polyline points=\"{}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" \
                 stroke-linejoin=\"round\"/>",
                points.join(" ")
            );
        }
        // Dots where points are few enough to tell apart (and a lone point is visible).
        if s.points.len() <= 48 {
            for (at, v) in &s.points {
                let _ = write!(
                    out,
                    "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{colour}\"/>",
                    x(*at),
                    y(*v)
                );
            }
        }
    }
    out.push_str("</svg><ul class=\"legend\">");
    for (i, (s, text)) in series.iter().zip(&latest).enumerate() {
        let _ = s;
        let _ = write!(
            out,
            "<li><svg width=\"12\" height=\"12\" aria-hidden=\"true\" focusable=\"false\">\
             <rect width=\"12\" height=\"12\" rx=\"2\" fill=\"{}\"/></svg> {}</li>",
            PALETTE[i % PALETTE.len()],
            esc(text)
        );
    }
    if series.is_empty() {
        out.push_str("<li>No data in this range.</li>");
    }
    out.push_str("</ul></figure>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_end_on_round_numbers() {
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(3.0), 5.0);
        assert_eq!(nice_max(12.0), 20.0);
        assert_eq!(nice_max(700.0), 1000.0);
    }

    #[test]
    fn labels_are_escaped_and_points_drawn() {
        let from = DateTime::from_timestamp(0, 0).unwrap();
        let to = DateTime::from_timestamp(3600, 0).unwrap();
        let svg = line_chart(
            &Chart {
                id: "c",
                title: "T",
                caption: "since <start>",
                unit: "",
            },
            from,
            to,
            &[Series {
                label: "<p>".to_owned(),
                points: vec![(from, 1.0), (to, 2.0)],
            }],
        );
        assert!(svg.contains("&lt;p&gt; 2"), "{svg}");
        assert!(svg.contains("since &lt;start&gt;"));
        assert!(svg.contains("<polyline"));
        assert!(!svg.contains("<p>"));
    }
}
