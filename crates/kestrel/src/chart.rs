//! Profile charts (plotters): per-layer time bars coloured by op family with share labels, and
//! the roofline with every layer placed on it. SVG or PNG by the file extension.

use crate::profile::Profile;
use kestrel_core::{Error, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;
use std::sync::Once;

const FONT: &[u8] = include_bytes!("../../../assets/fonts/DejaVuSans.ttf");

pub(crate) fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // the bundled DejaVu Sans: text renders the same on machines without system fonts
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

/// Colour of an op family.
pub fn family_color(f: &str) -> RGBColor {
    match f {
        "Conv" => RGBColor(31, 119, 180),
        "Gemm" => RGBColor(214, 39, 40),
        "Pool" => RGBColor(44, 160, 44),
        "Elementwise" => RGBColor(255, 127, 14),
        "Normalization" => RGBColor(148, 103, 189),
        "DataMovement" => RGBColor(140, 86, 75),
        _ => RGBColor(127, 127, 127),
    }
}

fn err<E: std::fmt::Display>(e: E) -> Error {
    Error::invalid(format!("chart: {e}"))
}

/// Writes the chart to `path` (`.svg` or `.png`).
pub fn write_chart(p: &Profile, path: &Path) -> Result<()> {
    register_font();
    let n = p.layers.len().max(1);
    let bars_h = (n as u32 * 16 + 120).max(360);
    let size = (1200u32, bars_h + 620);
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase())
        .as_deref()
    {
        Some("svg") => {
            let root = SVGBackend::new(path, size).into_drawing_area();
            draw(p, &root, bars_h)?;
            root.present().map_err(err)
        }
        Some("png") => {
            let root = BitMapBackend::new(path, size).into_drawing_area();
            draw(p, &root, bars_h)?;
            root.present().map_err(err)
        }
        _ => Err(Error::invalid(format!(
            "chart file {} must end in .svg or .png",
            path.display()
        ))),
    }
}

fn draw<DB: DrawingBackend>(p: &Profile, root: &DrawingArea<DB, Shift>, bars_h: u32) -> Result<()> {
    root.fill(&WHITE).map_err(err)?;
    let (top, bottom) = root.split_vertically(bars_h);
    draw_bars(p, &top)?;
    draw_roofline(p, &bottom)
}

fn draw_bars<DB: DrawingBackend>(p: &Profile, area: &DrawingArea<DB, Shift>) -> Result<()> {
    let n = p.layers.len();
    let max_t = p
        .layers
        .iter()
        .map(|l| l.time_ms)
        .fold(0.0, f64::max)
        .max(1e-6);
    let fam: Vec<String> = p
        .families
        .iter()
        .map(|f| format!("{} {:.0}%", f.family, f.time_share * 100.0))
        .collect();
    let caption = format!(
        "{}: {:.2} ms/frame ({} threads, {}), time per layer; by family: {}",
        p.model,
        p.end_to_end_ms,
        p.threads,
        p.simd,
        fam.join(", ")
    );
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(10)
        .build_cartesian_2d(0f64..max_t * 1.35, 0f64..n.max(1) as f64)
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .disable_y_axis()
        .x_desc("time (ms, median)")
        .draw()
        .map_err(err)?;
    for (i, l) in p.layers.iter().enumerate() {
        let y = (n - 1 - i) as f64; // first layer at the top
        let c = family_color(&l.family);
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(0.0, y + 0.15), (l.time_ms, y + 0.85)],
                c.filled(),
            )))
            .map_err(err)?;
        let label = format!(
            "{} {} [{}] {:.1}%",
            l.name,
            l.op,
            l.algorithm,
            l.share * 100.0
        );
        chart
            .draw_series(std::iter::once(Text::new(
                label,
                (l.time_ms + max_t * 0.01, y + 0.8),
                ("sans-serif", 11),
            )))
            .map_err(err)?;
    }
    Ok(())
}

fn draw_roofline<DB: DrawingBackend>(p: &Profile, area: &DrawingArea<DB, Shift>) -> Result<()> {
    let pk = &p.peaks;
    let ais: Vec<f64> = p
        .layers
        .iter()
        .map(|l| l.intensity)
        .filter(|&a| a > 0.0)
        .collect();
    let lo = ais
        .iter()
        .copied()
        .fold(f64::INFINITY, f64::min)
        .min(pk.ridge() / 10.0)
        .max(1e-3)
        / 2.0;
    let hi = ais
        .iter()
        .copied()
        .fold(0.0, f64::max)
        .max(pk.ridge() * 10.0)
        * 2.0;
    let ymin = p
        .layers
        .iter()
        .map(|l| l.achieved_gflops)
        .filter(|&g| g > 0.0)
        .fold(f64::INFINITY, f64::min)
        .min(lo * pk.triad_gbps)
        .max(1e-3)
        / 2.0;
    let ymax = pk.fma_gflops * 2.0;
    let mut chart = ChartBuilder::on(area)
        .caption(
            format!(
                "roofline: peak {:.0} GFLOP/s (FMA), {:.1} GB/s (triad), ridge {:.1} flop/byte ({} threads)",
                pk.fma_gflops, pk.triad_gbps, pk.ridge(), pk.threads
            ),
            ("sans-serif", 16),
        )
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d((lo..hi).log_scale(), (ymin..ymax).log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("arithmetic intensity (flop / byte moved)")
        .y_desc("GFLOP/s")
        .draw()
        .map_err(err)?;
    let roof: Vec<(f64, f64)> = (0..=200)
        .map(|i| {
            let a = lo * (hi / lo).powf(i as f64 / 200.0);
            (a, pk.attainable(a))
        })
        .collect();
    chart
        .draw_series(LineSeries::new(roof, BLACK.stroke_width(2)))
        .map_err(err)?
        .label("roofline")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
    for f in &p.families {
        let c = family_color(&f.family);
        let pts: Vec<(f64, f64)> = p
            .layers
            .iter()
            .filter(|l| l.family == f.family && l.intensity > 0.0 && l.achieved_gflops > 0.0)
            .map(|l| (l.intensity, l.achieved_gflops))
            .collect();
        if pts.is_empty() {
            continue;
        }
        chart
            .draw_series(pts.into_iter().map(|pt| Circle::new(pt, 5, c.filled())))
            .map_err(err)?
            .label(f.family.clone())
            .legend(move |(x, y)| Circle::new((x + 10, y), 5, c.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .draw()
        .map_err(err)?;
    Ok(())
}
