//! Grouped bar charts as SVG.
//!
//! plotters is built without its `ttf` and `ab_glyph` features: text then goes into the SVG
//! as `<text>` elements that the viewer renders, so no font file is needed to make a chart
//! (plotters only estimates text widths for layout).

use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// raftmq first in the broker order, so it always gets the first colour.
const COLOURS: [RGBColor; 6] = [
    RGBColor(0xD9, 0x5F, 0x02),
    RGBColor(0x1F, 0x77, 0xB4),
    RGBColor(0x2C, 0xA0, 0x2C),
    RGBColor(0x94, 0x67, 0xBD),
    RGBColor(0x8C, 0x56, 0x4B),
    RGBColor(0x7F, 0x7F, 0x7F),
];

pub struct Bars<'a> {
    pub title: &'a str,
    pub y_label: &'a str,
    /// One group of bars per entry, left to right.
    pub groups: Vec<String>,
    /// One bar per group for each series (a broker); `None` leaves a gap marked n/a.
    pub series: Vec<(String, Vec<Option<f64>>)>,
}

/// A log-scale grouped bar chart: the figures span orders of magnitude across scenarios.
pub fn grouped_bars(path: &Path, bars: &Bars) -> Result<()> {
    let values: Vec<f64> = bars
        .series
        .iter()
        .flat_map(|(_, v)| v.iter().flatten().copied())
        .filter(|v| v.is_finite() && *v > 0.0)
        .collect();
    let (Some(min), Some(max)) = (
        values.iter().copied().reduce(f64::min),
        values.iter().copied().reduce(f64::max),
    ) else {
        return Err(anyhow!("no positive value to chart"));
    };
    let (lo, hi) = log_bounds(min, max);

    let n = bars.groups.len();
    let width = (160 * n as u32).clamp(520, 1400);
    let root = SVGBackend::new(path, (width, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(bars.title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..n as f64, (lo..hi).log_scale())
        .map_err(err)?;
    // The group names are drawn below the axis by hand: an f64 axis puts its ticks at
    // round numbers, not at the group centres.
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_desc(bars.y_label)
        .y_label_formatter(&|y| compact(*y))
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(err)?;

    // Bars share 80% of each group's width; the rest separates the groups.
    let k = bars.series.len().max(1) as f64;
    let bar_w = 0.8 / k;
    let label =
        TextStyle::from(("sans-serif", 11).into_font()).pos(Pos::new(HPos::Center, VPos::Bottom));
    for (s, (name, vals)) in bars.series.iter().enumerate() {
        let colour = COLOURS[s % COLOURS.len()];
        let x_of = |g: usize| g as f64 + 0.1 + bar_w * s as f64;
        chart
            .draw_series(vals.iter().enumerate().filter_map(|(g, v)| {
                let v = v.filter(|v| *v > 0.0)?;
                Some(Rectangle::new(
                    [(x_of(g), lo), (x_of(g) + bar_w * 0.92, v)],
                    colour.filled(),
                ))
            }))
            .map_err(err)?
            .label(name.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], colour.filled()));
        chart
            .draw_series(vals.iter().enumerate().map(|(g, v)| {
                let x = x_of(g) + bar_w * 0.46;
                match v.filter(|v| *v > 0.0) {
                    Some(v) => Text::new(compact(v), (x, v), label.clone()),
                    None => Text::new("n/a".to_string(), (x, lo * 1.5), label.clone()),
                }
            }))
            .map_err(err)?;
    }
    let name_style =
        TextStyle::from(("sans-serif", 14).into_font()).pos(Pos::new(HPos::Center, VPos::Top));
    for (g, name) in bars.groups.iter().enumerate() {
        let (x, y) = chart.backend_coord(&(g as f64 + 0.5, lo));
        root.draw(&Text::new(name.as_str(), (x, y + 8), name_style.clone()))
            .map_err(err)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

/// Powers of ten around the data, with room above the tallest bar for its label and the
/// legend.
pub fn log_bounds(min: f64, max: f64) -> (f64, f64) {
    let lo = 10f64.powf(min.log10().floor());
    let hi = 10f64.powf((max * 3.0).log10().ceil());
    (lo, hi)
}

/// 950 -> "950", 1_000 -> "1k", 12_345 -> "12k", 2_500_000 -> "2.5M".
pub fn compact(v: f64) -> String {
    let a = v.abs();
    let (scaled, unit, decimals) = if a >= 1e6 {
        (v / 1e6, "M", 1)
    } else if a >= 1e4 {
        (v / 1e3, "k", 0)
    } else if a >= 1e3 {
        (v / 1e3, "k", 1)
    } else if a >= 10.0 || a == 0.0 {
        (v, "", 0)
    } else {
        (v, "", 2)
    };
    let mut s = format!("{scaled:.decimals$}");
    // "1.0M" reads as more precise than it is; axis ticks are exact powers of ten.
    if s.contains('.') {
        s = s.trim_end_matches('0').trim_end_matches('.').to_string();
    }
    s + unit
}

fn err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("drawing: {e}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_powers_of_ten_with_headroom() {
        assert_eq!(log_bounds(230.0, 45_000.0), (100.0, 1_000_000.0));
        assert_eq!(log_bounds(230.0, 25_000.0), (100.0, 100_000.0));
        assert_eq!(log_bounds(1.0, 1.0), (1.0, 10.0));
    }

    #[test]
    fn compact_numbers() {
        assert_eq!(compact(950.0), "950");
        assert_eq!(compact(1234.0), "1.2k");
        assert_eq!(compact(12_345.0), "12k");
        assert_eq!(compact(2_500_000.0), "2.5M");
        assert_eq!(compact(0.5), "0.5");
        assert_eq!(compact(1000.0), "1k");
        assert_eq!(compact(1_000_000.0), "1M");
        assert_eq!(compact(10_000_000.0), "10M");
    }

    #[test]
    fn writes_svg_text_without_fonts() {
        let dir = std::env::temp_dir().join(format!("bench-report-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.svg");
        grouped_bars(
            &path,
            &Bars {
                title: "Throughput",
                y_label: "deliveries/s",
                groups: vec!["qos0".into(), "qos1".into()],
                series: vec![
                    ("raftmq".into(), vec![Some(50_000.0), Some(20_000.0)]),
                    ("mosquitto".into(), vec![Some(40_000.0), None]),
                ],
            },
        )
        .unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        // plotters writes each text on a line of its own inside its <text> element.
        for text in ["Throughput", "qos1", "raftmq", "mosquitto", "50k", "n/a"] {
            let element = format!(">\n{text}\n</text>");
            assert!(svg.contains(&element), "{text} missing from the SVG");
        }
    }
}
