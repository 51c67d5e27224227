//! `metrics.jsonl` (one JSON object per logged step, appended and flushed as training goes) and
//! `loss.png`, the training and eval loss curves drawn with plotters.

use std::io::Write;
use std::path::Path;

use plotters::prelude::*;
use serde_json::Value;

use crate::TrainError;

pub struct MetricsLog {
    file: std::fs::File,
}

impl MetricsLog {
    /// Opens `path` for appending (a resumed run continues the same file).
    pub fn open(path: &Path) -> Result<Self, TrainError> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| TrainError::Io(format!("{}: {e}", path.display())))?;
        Ok(Self { file })
    }

    pub fn write(&mut self, row: &Value) -> Result<(), TrainError> {
        writeln!(self.file, "{row}")
            .and_then(|_| self.file.flush())
            .map_err(|e| TrainError::Io(e.to_string()))
    }
}

/// Keeps only rows with step < `step` (a resumed run rewrites what the killed run logged after its
/// last checkpoint).
pub fn truncate_after(path: &Path, step: usize) -> Result<(), TrainError> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: String = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<Value>(l)
                .ok()
                .and_then(|v| v["step"].as_u64())
                .is_some_and(|s| (s as usize) < step)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    graft_models::fsio::write_file(path, kept.as_bytes())
        .map_err(|e| TrainError::Io(format!("{}: {e}", path.display())))
}

const FONT: &[u8] = include_bytes!("../assets/DejaVuSansMono.ttf");

/// Draws `loss` (and `eval_loss` where present) against `step` from a metrics.jsonl into `png`.
pub fn plot(metrics: &Path, png: &Path, title: &str) -> Result<(), TrainError> {
    let text = std::fs::read_to_string(metrics)
        .map_err(|e| TrainError::Io(format!("{}: {e}", metrics.display())))?;
    let rows: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let series = |key: &str| -> Vec<(f64, f64)> {
        rows.iter()
            .filter_map(|r| Some((r["step"].as_f64()?, r.get(key)?.as_f64()?)))
            .filter(|p| p.1.is_finite())
            .collect()
    };
    let (train, eval) = (series("loss"), series("eval_loss"));
    if train.is_empty() {
        return Ok(());
    }
    let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    let err = |e: &dyn std::fmt::Display| TrainError::Io(format!("{}: {e}", png.display()));
    let all = train.iter().chain(&eval);
    let (x_max, y_min, y_max) = all.fold(
        (1.0f64, f64::INFINITY, f64::NEG_INFINITY),
        |(x, lo, hi), p| (x.max(p.0), lo.min(p.1), hi.max(p.1)),
    );
    let pad = ((y_max - y_min) * 0.05).max(1e-3);
    let root = BitMapBackend::new(png, (900, 540)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..x_max, (y_min - pad)..(y_max + pad))
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("step")
        .y_desc("loss")
        .draw()
        .map_err(|e| err(&e))?;
    chart
        .draw_series(LineSeries::new(train, &BLUE))
        .map_err(|e| err(&e))?
        .label("train")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    if !eval.is_empty() {
        chart
            .draw_series(LineSeries::new(eval.clone(), &RED))
            .map_err(|e| err(&e))?
            .label("eval")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
        chart
            .draw_series(eval.iter().map(|&p| Circle::new(p, 3, RED.filled())))
            .map_err(|e| err(&e))?;
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))
}

/// A histogram of `values` (30 bins) into `png`.
pub fn histogram(values: &[f64], png: &Path, title: &str, x_desc: &str) -> Result<(), TrainError> {
    if values.is_empty() {
        return Ok(());
    }
    let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    let err = |e: &dyn std::fmt::Display| TrainError::Io(format!("{}: {e}", png.display()));
    let (lo, hi) = values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    let bins = 30usize;
    let width = ((hi - lo) / bins as f64).max(1e-9);
    let mut counts = vec![0usize; bins];
    for &v in values {
        counts[(((v - lo) / width) as usize).min(bins - 1)] += 1;
    }
    let top = *counts.iter().max().unwrap_or(&1) as f64;
    let root = BitMapBackend::new(png, (900, 540)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(lo..(lo + width * bins as f64), 0f64..top * 1.05)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc("rows")
        .draw()
        .map_err(|e| err(&e))?;
    chart
        .draw_series(counts.iter().enumerate().map(|(i, &c)| {
            let x0 = lo + i as f64 * width;
            Rectangle::new([(x0, 0.0), (x0 + width, c as f64)], BLUE.mix(0.6).filled())
        }))
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))
}

/// Grouped horizontal bars: one group per row, one bar per series (`values[row][series]`, NaN =
/// missing), each bar's length relative to the row's largest value and its value written at its
/// end — metrics of different scales side by side. graft eval's before/after comparison.
pub fn grouped_bars(
    rows: &[(String, Vec<f64>)],
    series: &[String],
    png: &Path,
    title: &str,
) -> Result<(), TrainError> {
    if rows.is_empty() || series.is_empty() {
        return Ok(());
    }
    let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    let err = |e: &dyn std::fmt::Display| TrainError::Io(format!("{}: {e}", png.display()));
    let n = series.len() as f64;
    let height = (110 + rows.len() * (22 * series.len() + 26)).min(6000) as u32;
    let root = BitMapBackend::new(png, (1000, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let rows_f = rows.len() as f64;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(36)
        .build_cartesian_2d(0f64..1.35, 0f64..rows_f)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .disable_y_axis()
        .x_desc("relative to the row's largest value")
        .draw()
        .map_err(|e| err(&e))?;
    let colors = [BLUE, RED, GREEN, MAGENTA, CYAN, BLACK];
    let band = 0.7 / n;
    for (s, name) in series.iter().enumerate() {
        let color = colors[s % colors.len()];
        let mut bars = Vec::new();
        let mut texts = Vec::new();
        for (i, (_, values)) in rows.iter().enumerate() {
            let max = values
                .iter()
                .filter(|v| v.is_finite())
                .fold(0f64, |m, v| m.max(v.abs()));
            let Some(&v) = values.get(s).filter(|v| v.is_finite()) else {
                continue;
            };
            let len = if max > 0.0 { v.abs() / max } else { 0.0 };
            let top = rows_f - i as f64 - 0.28 - s as f64 * band;
            bars.push(Rectangle::new(
                [(0.0, top - band * 0.9), (len, top)],
                color.mix(0.7).filled(),
            ));
            texts.push(Text::new(
                format!("{v:.4}"),
                (len + 0.01, top - band * 0.1),
                ("sans-serif", 13),
            ));
        }
        chart
            .draw_series(bars)
            .map_err(|e| err(&e))?
            .label(name.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 15, y + 5)], color.filled()));
        chart.draw_series(texts).map_err(|e| err(&e))?;
    }
    chart
        .draw_series(rows.iter().enumerate().map(|(i, (label, _))| {
            Text::new(
                label.clone(),
                (0.005, rows_f - i as f64 - 0.05),
                ("sans-serif", 15),
            )
        }))
        .map_err(|e| err(&e))?;
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_resume_keeps_earlier_steps_and_drops_a_torn_last_line() {
        let dir = std::env::temp_dir().join(format!("graft-metrics-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("metrics.jsonl");
        // A run killed while writing step 3's line, resumed from the checkpoint at step 3.
        let lines = "{\"step\":0,\"loss\":2.0}\n{\"step\":1,\"loss\":1.5}\n{\"step\":2,\"loss\":1.2}\n{\"step\":3,\"lo";
        std::fs::write(&path, lines).unwrap();
        super::truncate_after(&path, 2).unwrap();
        let kept = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            kept,
            "{\"step\":0,\"loss\":2.0}\n{\"step\":1,\"loss\":1.5}\n"
        );
        std::fs::write(&path, lines).unwrap();
        super::truncate_after(&path, 9).unwrap();
        assert!(std::fs::read_to_string(&path)
            .unwrap()
            .ends_with("\"loss\":1.2}\n"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
