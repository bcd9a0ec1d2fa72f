//! Drawing results onto frames: detection boxes with scores and keypoints, and text lines
//! (classes, frame statistics) in a corner. Uses plotters on the frame's own pixel buffer with
//! the bundled font, so output looks the same on every machine.

use crate::detect::Detection;
use kestrel_core::{Error, Result};
use plotters::prelude::*;

/// Draws `detections` and `lines` (top-left, one per line) onto `img`.
pub fn draw(img: &mut image::RgbImage, detections: &[Detection], lines: &[String]) -> Result<()> {
    crate::chart::register_font();
    let (w, h) = img.dimensions();
    let font_px = (h as f64 / 28.0).clamp(10.0, 28.0);
    let err = |e: &dyn std::fmt::Display| Error::invalid(format!("annotate: {e}"));
    {
        let root = BitMapBackend::with_buffer(img.as_mut(), (w, h)).into_drawing_area();
        let green = RGBColor(40, 220, 90);
        for d in detections {
            let [x0, y0, x1, y1] = d.bbox.map(|v| v.round() as i32);
            root.draw(&Rectangle::new([(x0, y0), (x1, y1)], green.stroke_width(2)))
                .map_err(|e| err(&e))?;
            for k in &d.keypoints {
                root.draw(&Circle::new(
                    (k[0].round() as i32, k[1].round() as i32),
                    2,
                    RGBColor(255, 60, 60).filled(),
                ))
                .map_err(|e| err(&e))?;
            }
            let text = match &d.label {
                Some(l) => format!("{l} {:.2}", d.score),
                None => format!("{:.2}", d.score),
            };
            let ty = (y0 - font_px as i32 - 2).max(0);
            root.draw(&Rectangle::new(
                [
                    (x0, ty),
                    (
                        x0 + (text.len() as f64 * font_px * 0.6) as i32,
                        ty + font_px as i32 + 2,
                    ),
                ],
                green.filled(),
            ))
            .map_err(|e| err(&e))?;
            root.draw(&Text::new(
                text,
                (x0 + 2, ty + 1),
                ("sans-serif", font_px).into_font().color(&BLACK),
            ))
            .map_err(|e| err(&e))?;
        }
        for (i, line) in lines.iter().enumerate() {
            let y = 4 + i as i32 * (font_px as i32 + 4);
            root.draw(&Rectangle::new(
                [
                    (2, y - 1),
                    (
                        6 + (line.len() as f64 * font_px * 0.58) as i32,
                        y + font_px as i32 + 2,
                    ),
                ],
                RGBColor(0, 0, 0).mix(0.55).filled(),
            ))
            .map_err(|e| err(&e))?;
            root.draw(&Text::new(
                line.clone(),
                (5, y),
                ("sans-serif", font_px).into_font().color(&WHITE),
            ))
            .map_err(|e| err(&e))?;
        }
        root.present().map_err(|e| err(&e))?;
    }
    Ok(())
}
