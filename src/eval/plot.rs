//! Success and precision plots as PNG files, drawn like the toolkits draw them: one line per
//! tracker, legend `NAME [score]` sorted best first.
//!
//! plotters draws into an RGB buffer (its own bitmap encoder is off so that only one image crate
//! is linked) and `image` writes the PNG. Text uses DejaVu Sans, compiled in
//! (`src/assets/DejaVuSans.ttf`, licence in `src/assets/DejaVu-LICENSE`), so plots look the same on
//! every machine and need no system fonts.

use std::path::Path;
use std::sync::OnceLock;

use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

use super::metrics::{Protocol, Report};
use crate::{Error, Result};

static DEJAVU_SANS: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

/// The family name plotters looks text up under (`FontFamily::SansSerif`).
const FAMILY: &str = "sans-serif";

/// Register the font with plotters once per process.
fn font() -> Result<()> {
    static DONE: OnceLock<bool> = OnceLock::new();
    let ok = *DONE.get_or_init(|| register_font(FAMILY, FontStyle::Normal, DEJAVU_SANS).is_ok());
    if ok {
        Ok(())
    } else {
        Err(Error::Other(
            "plot: the embedded DejaVu Sans font could not be loaded".into(),
        ))
    }
}

/// Distinct line colours (matplotlib's default cycle), reused past ten trackers.
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// One line of a plot.
#[derive(Clone, Debug)]
pub struct Curve {
    pub label: String,
    /// One value per x of the plot, in [0, 1].
    pub ys: Vec<f64>,
}

/// Where the legend goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Legend {
    LowerLeft,
    LowerRight,
}

/// A plot's frame: title, axis names, the x positions every curve is sampled at.
#[derive(Clone, Debug)]
pub struct Axes<'a> {
    pub title: &'a str,
    pub x_label: &'a str,
    pub y_label: &'a str,
    pub xs: &'a [f64],
    pub legend: Legend,
}

/// Draw `curves` over `axes` into an RGB image of `size` (width, height).
pub fn render(axes: &Axes, curves: &[Curve], size: (u32, u32)) -> Result<image::RgbImage> {
    font()?;
    let (w, h) = size;
    if w < 200 || h < 150 {
        return Err(Error::Other(format!(
            "plot: {w}×{h} is too small (at least 200×150)"
        )));
    }
    if let Some(c) = curves.iter().find(|c| c.ys.len() != axes.xs.len()) {
        return Err(Error::Other(format!(
            "plot '{}': curve '{}' has {} values for {} x positions",
            axes.title,
            c.label,
            c.ys.len(),
            axes.xs.len()
        )));
    }
    let x_max = axes.xs.iter().copied().fold(0.0f64, f64::max).max(1e-9);
    let mut buf = vec![0u8; w as usize * h as usize * 3];
    let err = |e: &dyn std::fmt::Display| Error::Other(format!("plot '{}': {e}", axes.title));
    {
        let root = BitMapBackend::with_buffer(&mut buf, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(axes.title, (FAMILY, 20))
            .margin(14)
            .x_label_area_size(44)
            .y_label_area_size(52)
            .build_cartesian_2d(0f64..x_max, 0f64..1f64)
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_desc(axes.x_label)
            .y_desc(axes.y_label)
            .label_style((FAMILY, 13))
            .axis_desc_style((FAMILY, 15))
            // Grid at the labelled ticks only, as the toolkits' matplotlib plots have it.
            .light_line_style(WHITE)
            .x_label_formatter(&|v| {
                if x_max > 2.0 {
                    format!("{v:.0}")
                } else {
                    format!("{v:.1}")
                }
            })
            .y_label_formatter(&|v| format!("{v:.1}"))
            .draw()
            .map_err(|e| err(&e))?;
        for (i, c) in curves.iter().enumerate() {
            let style = ShapeStyle {
                color: PALETTE[i % PALETTE.len()].to_rgba(),
                filled: false,
                stroke_width: 2,
            };
            // An empty report has NaN curves: leave those points out rather than draw garbage.
            let points: Vec<(f64, f64)> = axes
                .xs
                .iter()
                .copied()
                .zip(c.ys.iter().copied())
                .filter(|(_, y)| y.is_finite())
                .collect();
            chart
                .draw_series(LineSeries::new(points, style))
                .map_err(|e| err(&e))?
                .label(c.label.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 22, y)], style));
        }
        if !curves.is_empty() {
            chart
                .configure_series_labels()
                .position(match axes.legend {
                    Legend::LowerLeft => SeriesLabelPosition::LowerLeft,
                    Legend::LowerRight => SeriesLabelPosition::LowerRight,
                })
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .label_font((FAMILY, 13))
                .draw()
                .map_err(|e| err(&e))?;
        }
        root.present().map_err(|e| err(&e))?;
    }
    image::RgbImage::from_raw(w, h, buf)
        .ok_or_else(|| Error::Other(format!("plot '{}': buffer size mismatch", axes.title)))
}

/// [`render`] and write the PNG to `path`.
pub fn plot_curves(path: &Path, axes: &Axes, curves: &[Curve], size: (u32, u32)) -> Result<()> {
    let img = render(axes, curves, size)?;
    img.save_with_format(path, image::ImageFormat::Png)
        .map_err(|e| Error::Other(format!("{}: {e}", path.display())))
}

/// Curves of `reports` with `NAME [score]` labels, best score first.
fn ranked(
    reports: &[Report],
    score: impl Fn(&Report) -> f64,
    ys: impl Fn(&Report) -> Vec<f64>,
) -> Vec<Curve> {
    let mut v: Vec<(f64, Curve)> = reports
        .iter()
        .map(|r| {
            let s = score(r);
            (
                s,
                Curve {
                    label: format!("{} [{:.3}]", r.tracker, s),
                    ys: ys(r),
                },
            )
        })
        .collect();
    v.sort_by(|a, b| b.0.total_cmp(&a.0));
    v.into_iter().map(|x| x.1).collect()
}

/// All reports must share a protocol: their curves have different thresholds otherwise.
fn one_protocol(reports: &[Report]) -> Result<Protocol> {
    let p = reports
        .first()
        .ok_or_else(|| Error::Other("plot: no reports".into()))?
        .protocol;
    if let Some(r) = reports.iter().find(|r| r.protocol != p) {
        return Err(Error::Other(format!(
            "plot: {} was scored with protocol {} and {} with {}; plot them separately",
            reports[0].tracker,
            p.name(),
            r.tracker,
            r.protocol.name()
        )));
    }
    Ok(p)
}

/// Success plot: overlap threshold → success rate; legend `NAME [AUC]` (`NAME [AO]` under the
/// GOT-10k protocol, as got10k-toolkit labels it).
pub fn success_plot(path: &Path, title: &str, reports: &[Report], size: (u32, u32)) -> Result<()> {
    let p = one_protocol(reports)?;
    let xs = p.success_thresholds();
    let curves = ranked(reports, |r| r.mean.headline(p), |r| r.mean.success.clone());
    let axes = Axes {
        title,
        x_label: "Overlap threshold",
        y_label: "Success rate",
        xs: &xs,
        legend: Legend::LowerLeft,
    };
    plot_curves(path, &axes, &curves, size)
}

/// Precision plot: location error threshold (px) → precision; legend `NAME [P@20]`.
pub fn precision_plot(
    path: &Path,
    title: &str,
    reports: &[Report],
    size: (u32, u32),
) -> Result<()> {
    let p = one_protocol(reports)?;
    if p == Protocol::Got10k {
        return Err(Error::Other(
            "plot: the GOT-10k protocol has no precision measure".into(),
        ));
    }
    let xs = p.precision_thresholds();
    let curves = ranked(
        reports,
        |r| r.mean.prec20.unwrap_or(f64::NAN),
        |r| r.mean.precision.clone(),
    );
    let axes = Axes {
        title,
        x_label: "Location error threshold (pixels)",
        y_label: "Precision",
        xs: &xs,
        legend: Legend::LowerRight,
    };
    plot_curves(path, &axes, &curves, size)
}

/// Normalised precision plot: normalised error threshold → precision; legend with the
/// protocol's normalised precision (value at 0.20, or curve mean under `Got10kOpe`).
pub fn norm_precision_plot(
    path: &Path,
    title: &str,
    reports: &[Report],
    size: (u32, u32),
) -> Result<()> {
    let p = one_protocol(reports)?;
    if p == Protocol::Got10k {
        return Err(Error::Other(
            "plot: the GOT-10k protocol has no precision measure".into(),
        ));
    }
    let xs = p.norm_thresholds();
    let curves = ranked(
        reports,
        |r| r.mean.norm_prec(p).unwrap_or(f64::NAN),
        |r| r.mean.norm_precision.clone(),
    );
    let axes = Axes {
        title,
        x_label: "Normalized location error threshold",
        y_label: "Normalized precision",
        xs: &xs,
        legend: Legend::LowerRight,
    };
    plot_curves(path, &axes, &curves, size)
}
