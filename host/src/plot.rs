//! Charts drawn with plotters: the training loss curve and scatter plots of 2-D samples.
//!
//! Text uses DejaVu Sans embedded in the binary, so charts look the same on every machine
//! and need no system fonts.

use std::path::Path;
use std::sync::Once;

use image::RgbImage;
use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::error::{Error, Result};
use crate::image_grid::write_png;

const WIDTH: u32 = 900;
const HEIGHT: u32 = 540;
const FONT: &str = "sans-serif";

fn register_font() {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        // The embedded font is valid; if it were not, text would be left out.
        let _ = plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular());
    });
}

fn drawing_error(path: &Path, error: impl std::fmt::Display) -> Error {
    Error::io(
        path,
        std::io::Error::other(format!("cannot draw the chart: {error}")),
    )
}

/// A trailing moving average of `values` over `window` entries.
pub fn moving_average(values: &[f32], window: usize) -> Vec<f32> {
    let window = window.max(1);
    let mut sum = 0.0f64;
    values
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            sum += f64::from(v);
            if i >= window {
                sum -= f64::from(values[i - window]);
            }
            (sum / (i + 1).min(window) as f64) as f32
        })
        .collect()
}

/// Draws the per-step `losses` (light) and their moving average (dark) on a logarithmic loss
/// axis, titled `title`, and writes the PNG to `path` atomically.
///
/// # Errors
/// [`Error::Invalid`] when there is no finite positive loss; [`Error::Io`] when the file
/// cannot be written.
pub fn write_loss_curve(path: &Path, losses: &[f32], title: &str) -> Result<()> {
    let finite: Vec<(f32, f32)> = losses
        .iter()
        .enumerate()
        .filter(|(_, l)| l.is_finite() && **l > 0.0)
        .map(|(i, &l)| ((i + 1) as f32, l))
        .collect();
    if finite.is_empty() {
        return Err(Error::Invalid("no positive finite loss to plot".into()));
    }
    let smooth = moving_average(losses, (losses.len() / 50).clamp(1, 200));
    let low = finite.iter().map(|p| p.1).fold(f32::INFINITY, f32::min);
    let high = finite.iter().map(|p| p.1).fold(0.0f32, f32::max);
    // Plotted as log10(loss) on a linear axis labelled with the loss itself: plotters' own
    // log axis draws no labels when the range spans less than a decade.
    let (low, high) = ((low * 0.9).log10(), (high.max(low * 1.01) * 1.1).log10());
    let steps = losses.len().max(2) as f32;
    register_font();
    let mut buffer = vec![0u8; (WIDTH * HEIGHT * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buffer, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| drawing_error(path, e))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FONT, 22))
            .margin(16)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(1f32..steps, low..high)
            .map_err(|e| drawing_error(path, e))?;
        chart
            .configure_mesh()
            .x_desc("step")
            .y_desc("loss")
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| format!("{:.3}", 10f32.powf(*y)))
            .label_style((FONT, 14))
            .draw()
            .map_err(|e| drawing_error(path, e))?;
        chart
            .draw_series(LineSeries::new(
                finite.iter().map(|&(x, l)| (x, l.log10())),
                RGBColor(160, 190, 230).stroke_width(1),
            ))
            .map_err(|e| drawing_error(path, e))?;
        chart
            .draw_series(LineSeries::new(
                smooth
                    .iter()
                    .enumerate()
                    .filter(|(_, l)| l.is_finite() && **l > 0.0)
                    .map(|(i, &l)| ((i + 1) as f32, l.log10())),
                RGBColor(20, 60, 160).stroke_width(2),
            ))
            .map_err(|e| drawing_error(path, e))?;
        root.present().map_err(|e| drawing_error(path, e))?;
    }
    write_buffer(path, buffer)
}

/// Draws 2-D `points` (`[n, 2]` row-major) as a scatter plot over `[-range, range]^2`,
/// titled `title`, and writes the PNG to `path` atomically.
///
/// # Errors
/// [`Error::Invalid`] when `points` is not a whole number of pairs; [`Error::Io`] when the
/// file cannot be written.
pub fn write_scatter(path: &Path, points: &[f32], range: f32, title: &str) -> Result<()> {
    if !points.len().is_multiple_of(2) {
        return Err(Error::Invalid(
            "a scatter plot needs 2-D points ([n, 2])".into(),
        ));
    }
    register_font();
    let side = HEIGHT;
    let mut buffer = vec![0u8; (side * side * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buffer, (side, side)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| drawing_error(path, e))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FONT, 20))
            .margin(16)
            .x_label_area_size(30)
            .y_label_area_size(40)
            .build_cartesian_2d(-range..range, -range..range)
            .map_err(|e| drawing_error(path, e))?;
        chart
            .configure_mesh()
            .label_style((FONT, 12))
            .draw()
            .map_err(|e| drawing_error(path, e))?;
        chart
            .draw_series(
                points
                    .chunks_exact(2)
                    .map(|p| Circle::new((p[0], p[1]), 2, RGBColor(20, 60, 160).filled())),
            )
            .map_err(|e| drawing_error(path, e))?;
        root.present().map_err(|e| drawing_error(path, e))?;
    }
    let (w, h) = (side, side);
    let image = RgbImage::from_raw(w, h, buffer).expect("the buffer has w * h * 3 bytes");
    write_png(path, &image)
}

fn write_buffer(path: &Path, buffer: Vec<u8>) -> Result<()> {
    let image = RgbImage::from_raw(WIDTH, HEIGHT, buffer).expect("the buffer has w * h * 3 bytes");
    write_png(path, &image)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moving_average_smooths_and_charts_are_written() {
        assert_eq!(
            moving_average(&[1.0, 3.0, 5.0, 7.0], 2),
            vec![1.0, 2.0, 4.0, 6.0]
        );
        let dir = tempfile::tempdir().unwrap();
        let losses: Vec<f32> = (0..300).map(|i| 1.0 / (1.0 + i as f32 * 0.05)).collect();
        let curve = dir.path().join("loss.png");
        write_loss_curve(&curve, &losses, "loss").unwrap();
        let image = image::open(&curve).unwrap().to_rgb8();
        assert_eq!(image.dimensions(), (WIDTH, HEIGHT));
        // Something other than the white background was drawn.
        let dark = image.pixels().filter(|p| p.0[0] < 100).count();
        assert!(dark > 500, "{dark} dark pixels");
        assert!(write_loss_curve(&curve, &[f32::NAN], "loss").is_err());

        let scatter = dir.path().join("points.png");
        write_scatter(&scatter, &[0.0, 0.0, 0.5, -0.5], 2.0, "points").unwrap();
        assert!(image::open(&scatter).is_ok());
        assert!(write_scatter(&scatter, &[0.0], 2.0, "odd").is_err());
    }
}
