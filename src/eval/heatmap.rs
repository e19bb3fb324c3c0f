//! The confusion matrix as a PNG heat map (plotters, drawn into a buffer, saved with `image`).
//!
//! Rows are true classes, columns predicted labels; each row is normalised so that a class's
//! colour says where its images went whatever its size. Text needs a TrueType font from the
//! system (`CLIPDEX_FONT`, else the usual DejaVu/Liberation/Arial paths); without one the map
//! is drawn without labels and the CSV beside it names the rows and columns.

use std::path::Path;
use std::sync::OnceLock;

use plotters::prelude::*;
use plotters::style::FontTransform;

use crate::error::{Error, Result};

const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation-sans/LiberationSans-Regular.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
    "/Library/Fonts/Arial.ttf",
    "C:\\Windows\\Fonts\\arial.ttf",
];

/// Registers a system font with plotters once; false when none was found.
fn font_ready() -> bool {
    static READY: OnceLock<bool> = OnceLock::new();
    *READY.get_or_init(|| {
        let candidates = std::env::var("CLIPDEX_FONT").into_iter().chain(FONT_PATHS.iter().map(|s| s.to_string()));
        for path in candidates {
            let Ok(bytes) = std::fs::read(&path) else { continue };
            // plotters keeps fonts for the life of the process.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                return true;
            }
        }
        tracing::warn!("no TrueType font found (set CLIPDEX_FONT=/path/to/font.ttf): the heat map has no labels");
        false
    })
}

fn shade(v: f64) -> RGBColor {
    let v = v.clamp(0.0, 1.0);
    let mix = |a: f64, b: f64| (a + (b - a) * v).round() as u8;
    RGBColor(mix(255.0, 8.0), mix(255.0, 48.0), mix(255.0, 107.0))
}

fn truncated(label: &str, chars: usize) -> String {
    if label.chars().count() <= chars {
        label.to_string()
    } else {
        label.chars().take(chars - 1).chain(['…']).collect()
    }
}

/// Writes `confusion` (rows: true classes, columns: `labels`; row `i` is `labels[i]`) as a
/// PNG heat map. Returns whether text labels could be drawn.
pub fn write_heatmap(confusion: &[Vec<u64>], labels: &[String], title: &str, path: &Path) -> Result<bool> {
    let rows = confusion.len();
    let cols = labels.len();
    if rows == 0 || cols == 0 {
        return Err(Error::Invalid("an empty confusion matrix has no heat map".into()));
    }
    let text = font_ready();
    let cell = (720 / rows.max(cols)).clamp(6, 40) as u32;
    let name_chars = 28;
    let label_px =
        if text { 12 + 7 * labels.iter().map(|l| l.chars().count()).max().unwrap_or(0).min(name_chars) } else { 0 };
    let (left, top) = (label_px as u32 + 8, label_px as u32 + if text { 30 } else { 8 });
    let (w, h) = (left + cell * cols as u32 + 8, top + cell * rows as u32 + 8);
    let mut buf = vec![0u8; (w * h * 3) as usize];
    let drawn = (|| -> std::result::Result<(), Box<dyn std::error::Error>> {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE)?;
        let font = ("sans-serif", 12).into_font();
        for (r, counts) in confusion.iter().enumerate() {
            let total = counts.iter().sum::<u64>().max(1) as f64;
            for (c, &n) in counts.iter().enumerate() {
                let (x, y) = ((left + c as u32 * cell) as i32, (top + r as u32 * cell) as i32);
                let v = n as f64 / total;
                root.draw(&Rectangle::new([(x, y), (x + cell as i32 - 1, y + cell as i32 - 1)], shade(v).filled()))?;
                if text && cell >= 20 && n > 0 {
                    let colour = if v > 0.5 { &WHITE } else { &BLACK };
                    root.draw(&Text::new(n.to_string(), (x + 3, y + cell as i32 / 2 - 6), font.color(colour)))?;
                }
            }
        }
        if text {
            root.draw(&Text::new(title.to_string(), (8, 6), ("sans-serif", 14).into_font()))?;
            let half = cell as i32 / 2;
            for (r, label) in labels.iter().take(rows).enumerate() {
                let y = (top + r as u32 * cell) as i32 + half - 6;
                root.draw(&Text::new(truncated(label, name_chars), (4, y), font.clone()))?;
            }
            let rotated = font.transform(FontTransform::Rotate270);
            for (c, label) in labels.iter().enumerate() {
                let x = (left + c as u32 * cell) as i32 + half - 6;
                root.draw(&Text::new(truncated(label, name_chars), (x, top as i32 - 4), rotated.clone()))?;
            }
        }
        root.present()?;
        Ok(())
    })();
    drawn.map_err(|e| Error::Invalid(format!("drawing the heat map: {e}")))?;
    let image = image::RgbImage::from_raw(w, h, buf).expect("the buffer has w × h × 3 bytes");
    image.save(path).map_err(|e| Error::Invalid(format!("cannot write {}: {e}", path.display())))?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_normalised_and_the_png_has_the_grid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.png");
        let labels: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        write_heatmap(&[vec![10, 0, 0], vec![1, 1, 0]], &labels, "t", &path).unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        // Bottom-right cell (row b, column c) is empty, hence white; the full diagonal cell of
        // row a is the darkest colour; half-filled cells are in between.
        let (w, h) = img.dimensions();
        let cell = 40;
        assert!(w >= 3 * cell && h >= 2 * cell, "{w}x{h}");
        let at = |r: u32, c: u32| *img.get_pixel(w - 8 - (3 - c) * cell + cell - 3, h - 8 - (2 - r) * cell + cell - 3);
        assert_eq!(at(1, 2), image::Rgb([255, 255, 255]));
        assert_eq!(at(0, 0), image::Rgb([8, 48, 107]));
        let half = at(1, 0);
        assert!(half[0] > 8 && half[0] < 255, "{half:?}");
        assert!(write_heatmap(&[], &labels, "t", &path).is_err());
    }
}
