//! The per-frame summary chart of a stream: inference and end-to-end latency against frame index
//! and, when convolutional caching is on, the fraction of MACs computed. SVG or PNG by extension.

use kestrel_core::{Error, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;

/// One frame of the chart.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StreamPoint {
    pub index: u64,
    pub infer_ms: f64,
    pub end_to_end_ms: f64,
    /// Share of the dense MACs actually computed (caching), 0..=1.
    pub computed_fraction: Option<f64>,
}

fn err<E: std::fmt::Display>(e: E) -> Error {
    Error::invalid(format!("chart: {e}"))
}

/// Renders `$draw(&root)` into an SVG or PNG file chosen by the extension of `$path`.
macro_rules! render {
    ($path:expr, $size:expr, $draw:expr) => {{
        let path: &Path = $path;
        match path
            .extension()
            .and_then(|e| e.to_str())
            .map(|e| e.to_ascii_lowercase())
            .as_deref()
        {
            Some("svg") => {
                let root = SVGBackend::new(path, $size).into_drawing_area();
                $draw(&root)?;
                root.present().map_err(err)
            }
            Some("png") => {
                let root = BitMapBackend::new(path, $size).into_drawing_area();
                $draw(&root)?;
                root.present().map_err(err)
            }
            _ => Err(Error::invalid(format!(
                "chart file {} must end in .svg or .png",
                path.display()
            ))),
        }
    }};
}

/// Writes the chart to `path` (`.svg` or `.png`).
pub fn write_stream_chart(points: &[StreamPoint], title: &str, path: &Path) -> Result<()> {
    crate::chart::register_font();
    render!(path, (1100u32, 520u32), |root| draw(points, title, root))
}

/// One frame of a caching evaluation: output error of the cached run against dense inference
/// on the same frame, and both latencies.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ErrorPoint {
    pub index: u64,
    pub max_rel_error: f64,
    pub dense_ms: f64,
    pub cached_ms: f64,
}

/// Writes a two-panel chart (`.svg` or `.png`): per-frame max relative output error of caching
/// against dense inference (top) and both latencies (bottom), against frame index.
pub fn write_error_chart(points: &[ErrorPoint], title: &str, path: &Path) -> Result<()> {
    crate::chart::register_font();
    render!(path, (1100u32, 640u32), |root| draw_error(
        points, title, root
    ))
}

fn draw_error<DB: DrawingBackend>(
    pts: &[ErrorPoint],
    title: &str,
    root: &DrawingArea<DB, Shift>,
) -> Result<()> {
    root.fill(&WHITE).map_err(err)?;
    let root = root.titled(title, ("sans-serif", 18)).map_err(err)?;
    let (top, bottom) = root.split_vertically(300);
    let n = pts.iter().map(|p| p.index).max().unwrap_or(0) as f64 + 1.0;
    let emax = pts.iter().map(|p| p.max_rel_error).fold(1e-6, f64::max) * 1.1;
    let red = RGBColor(214, 39, 40);
    let mut c = ChartBuilder::on(&top)
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(64)
        .build_cartesian_2d(0f64..n, 0f64..emax)
        .map_err(err)?;
    c.configure_mesh()
        .x_desc("frame")
        .y_desc("max rel. output error")
        .draw()
        .map_err(err)?;
    c.draw_series(LineSeries::new(
        pts.iter().map(|p| (p.index as f64, p.max_rel_error)),
        red.stroke_width(1),
    ))
    .map_err(err)?;
    let ymax = pts
        .iter()
        .map(|p| p.dense_ms.max(p.cached_ms))
        .fold(1.0, f64::max)
        * 1.1;
    let mut c = ChartBuilder::on(&bottom)
        .margin(10)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(0f64..n, 0f64..ymax)
        .map_err(err)?;
    c.configure_mesh()
        .x_desc("frame")
        .y_desc("latency (ms)")
        .draw()
        .map_err(err)?;
    let blue = RGBColor(31, 119, 180);
    let green = RGBColor(44, 160, 44);
    c.draw_series(LineSeries::new(
        pts.iter().map(|p| (p.index as f64, p.dense_ms)),
        blue.stroke_width(1),
    ))
    .map_err(err)?
    .label("dense")
    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], blue));
    c.draw_series(LineSeries::new(
        pts.iter().map(|p| (p.index as f64, p.cached_ms)),
        green.stroke_width(1),
    ))
    .map_err(err)?
    .label("cached")
    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], green));
    c.configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(err)?;
    Ok(())
}

fn draw<DB: DrawingBackend>(
    pts: &[StreamPoint],
    title: &str,
    root: &DrawingArea<DB, Shift>,
) -> Result<()> {
    root.fill(&WHITE).map_err(err)?;
    let n = pts.iter().map(|p| p.index).max().unwrap_or(0) as f64 + 1.0;
    let ymax = pts
        .iter()
        .map(|p| p.end_to_end_ms.max(p.infer_ms))
        .fold(1.0, f64::max)
        * 1.1;
    let with_fraction = pts.iter().any(|p| p.computed_fraction.is_some());
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .right_y_label_area_size(if with_fraction { 56 } else { 0 })
        .build_cartesian_2d(0f64..n, 0f64..ymax)
        .map_err(err)?
        .set_secondary_coord(0f64..n, 0f64..1.05);
    chart
        .configure_mesh()
        .x_desc("frame")
        .y_desc("latency (ms)")
        .draw()
        .map_err(err)?;
    let blue = RGBColor(31, 119, 180);
    let orange = RGBColor(255, 127, 14);
    chart
        .draw_series(LineSeries::new(
            pts.iter().map(|p| (p.index as f64, p.end_to_end_ms)),
            orange.stroke_width(1),
        ))
        .map_err(err)?
        .label("end-to-end")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], orange));
    chart
        .draw_series(LineSeries::new(
            pts.iter().map(|p| (p.index as f64, p.infer_ms)),
            blue.stroke_width(2),
        ))
        .map_err(err)?
        .label("inference")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], blue));
    if with_fraction {
        let green = RGBColor(44, 160, 44);
        chart
            .configure_secondary_axes()
            .y_desc("computed fraction of MACs")
            .draw()
            .map_err(err)?;
        chart
            .draw_secondary_series(LineSeries::new(
                pts.iter()
                    .filter_map(|p| p.computed_fraction.map(|f| (p.index as f64, f))),
                green.stroke_width(2),
            ))
            .map_err(err)?
            .label("computed fraction (right axis)")
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], green));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(err)?;
    Ok(())
}
