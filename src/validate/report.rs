//! How a [`Validation`] is shown: a fixed-width table for the terminal,
//! JSON for programs, and a self-contained HTML page with the table and
//! the figures (training curves; for binary tasks the reliability diagram
//! and the precision–recall curve), drawn with plotters' SVG backend.
//! Every number is formatted the same way everywhere, so output is stable.

use super::Validation;
use plotters::prelude::*;
use std::fmt::Write;

/// A metric value for a table: counts (columns named `missed...`) and
/// values of 1000 or more (errors in currency) without decimals, everything
/// else with four.
pub fn fmt_value(column: &str, v: f64) -> String {
    if v.is_nan() {
        "n/a".into()
    } else if v.abs() >= 1000.0 || column.starts_with("missed") {
        format!("{v:.0}")
    } else {
        format!("{v:.4}")
    }
}

fn json_str(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            c if (c as u32) < 0x20 => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

fn json_num(v: f64) -> String {
    if v.is_finite() {
        let s = format!("{v}");
        if s.contains('e') || s.contains('.') || s.contains("inf") {
            s
        } else {
            format!("{s}.0")
        }
    } else {
        "null".into()
    }
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

impl Validation {
    /// The header line: data, split, model and optimiser.
    pub fn setup_line(&self) -> String {
        format!(
            "{} task · {} · {} training rows, {} test rows · {} model · {} · seed {}",
            self.task.name(),
            self.data,
            self.train_rows,
            self.test_rows,
            self.model.name(),
            self.optimizer.name(),
            self.seed
        )
    }

    /// The comparison as a table: one row per candidate, one column per
    /// metric, then how training ended, the notes and the conclusion.
    pub fn table(&self) -> String {
        let mut header = vec!["spec".to_string()];
        header.extend(self.columns.iter().cloned());
        header.push("epochs".into());
        let mut rows: Vec<Vec<String>> = Vec::new();
        for o in &self.outcomes {
            let mut r = vec![o.label.clone()];
            r.extend(
                self.columns
                    .iter()
                    .zip(&o.values)
                    .map(|(c, v)| fmt_value(c, *v)),
            );
            r.push(format!(
                "{}{}",
                o.fit.epochs,
                if o.fit.stop == super::optim::Stop::Budget {
                    "*"
                } else {
                    ""
                }
            ));
            rows.push(r);
        }
        let widths: Vec<usize> = (0..header.len())
            .map(|c| {
                rows.iter()
                    .map(|r| r[c].chars().count())
                    .chain([header[c].chars().count()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        let _ = writeln!(out, "{}", self.setup_line());
        let line = |out: &mut String, cells: &[String]| {
            let mut s = String::new();
            for (c, cell) in cells.iter().enumerate() {
                if c == 0 {
                    let _ = write!(s, "{cell:<w$}", w = widths[0]);
                } else {
                    let _ = write!(s, "  {cell:>w$}", w = widths[c]);
                }
            }
            let _ = writeln!(out, "{}", s.trim_end());
        };
        line(&mut out, &header);
        let total: usize = widths.iter().sum::<usize>() + 2 * (widths.len() - 1);
        let _ = writeln!(out, "{}", "-".repeat(total));
        for r in &rows {
            line(&mut out, r);
        }
        if self
            .outcomes
            .iter()
            .any(|o| o.fit.stop == super::optim::Stop::Budget)
        {
            let _ = writeln!(
                out,
                "* stopped at the epoch budget before converging (raise --epochs)"
            );
        }
        for n in &self.notes {
            let _ = writeln!(out, "note: {n}");
        }
        if let Some(c) = &self.conclusion {
            let _ = writeln!(out, "conclusion: {c}");
        }
        out
    }

    /// The comparison as one JSON object (NaN as null).
    pub fn json(&self) -> String {
        let mut o = String::from("{");
        let _ = write!(
            o,
            "\"task\": {}, \"data\": {}, \"train_rows\": {}, \"test_rows\": {}, \"model\": {}, \"optimizer\": {}, \"seed\": {}, ",
            json_str(self.task.name()),
            json_str(&self.data),
            self.train_rows,
            self.test_rows,
            json_str(&self.model.name()),
            json_str(&self.optimizer.name()),
            self.seed
        );
        let cols: Vec<String> = self.columns.iter().map(|c| json_str(c)).collect();
        let _ = write!(o, "\"columns\": [{}], \"results\": [", cols.join(", "));
        for (i, r) in self.outcomes.iter().enumerate() {
            if i > 0 {
                o.push_str(", ");
            }
            let metrics: Vec<String> = self
                .columns
                .iter()
                .zip(&r.values)
                .map(|(c, v)| format!("{}: {}", json_str(c), json_num(*v)))
                .collect();
            let _ = write!(
                o,
                "{{\"spec\": {}, \"metrics\": {{{}}}, \"epochs\": {}, \"stop\": {}, \"objective\": {}}}",
                json_str(&r.label),
                metrics.join(", "),
                r.fit.epochs,
                json_str(r.fit.stop.name()),
                json_num(r.fit.curve.last().map_or(f64::NAN, |c| c.1))
            );
        }
        let notes: Vec<String> = self.notes.iter().map(|n| json_str(n)).collect();
        let _ = write!(
            o,
            "], \"notes\": [{}], \"conclusion\": {}}}",
            notes.join(", "),
            self.conclusion.as_deref().map_or("null".into(), json_str)
        );
        o
    }

    /// A self-contained HTML page: the table and the figures as inline SVG.
    pub fn html(&self, title: &str) -> Result<String, String> {
        let mut h = String::new();
        let _ = write!(
            h,
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title>\n<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}}table{{border-collapse:collapse}}td,th{{padding:4px 10px;border-bottom:1px solid #ccc;text-align:right}}td:first-child,th:first-child{{text-align:left}}figure{{display:inline-block;margin:1em}}</style></head><body>\n<h1>{t}</h1>\n<p>{s}</p>\n<table><tr><th>spec</th>",
            t = html_escape(title),
            s = html_escape(&self.setup_line())
        );
        for c in &self.columns {
            let _ = write!(h, "<th>{}</th>", html_escape(c));
        }
        h.push_str("<th>epochs</th></tr>\n");
        for o in &self.outcomes {
            let _ = write!(h, "<tr><td>{}</td>", html_escape(&o.label));
            for (c, v) in self.columns.iter().zip(&o.values) {
                let _ = write!(h, "<td>{}</td>", fmt_value(c, *v));
            }
            let _ = writeln!(h, "<td>{} ({})</td></tr>", o.fit.epochs, o.fit.stop.name());
        }
        h.push_str("</table>\n");
        for n in &self.notes {
            let _ = writeln!(h, "<p><small>{}</small></p>", html_escape(n));
        }
        if let Some(c) = &self.conclusion {
            let _ = writeln!(h, "<p><b>Conclusion:</b> {}</p>", html_escape(c));
        }
        let labels: Vec<&str> = self.outcomes.iter().map(|o| o.label.as_str()).collect();
        let curves: Vec<Vec<(f64, f64)>> = self
            .outcomes
            .iter()
            .map(|o| {
                let f0 = o.fit.curve.first().map_or(1.0, |c| c.1);
                let f0 = if f0.abs() > 0.0 && f0.is_finite() {
                    f0.abs()
                } else {
                    1.0
                };
                o.fit
                    .curve
                    .iter()
                    .map(|&(e, f)| (e as f64, f / f0))
                    .collect()
            })
            .collect();
        let figure = |h: &mut String, svg: String, caption: &str| {
            let _ = writeln!(
                h,
                "<figure>{svg}<figcaption>{}</figcaption></figure>",
                html_escape(caption)
            );
        };
        figure(
            &mut h,
            line_chart(
                "Training",
                "epoch",
                "objective / objective at start",
                &labels,
                &curves,
                None,
            )?,
            "Training curves: each candidate's objective (with its L2 term), relative to its value at the start.",
        );
        if self.outcomes.iter().all(|o| o.curves.is_some()) {
            let rel: Vec<Vec<(f64, f64)>> = self
                .outcomes
                .iter()
                .map(|o| {
                    o.curves
                        .as_ref()
                        .expect("checked")
                        .reliability
                        .iter()
                        .map(|&(p, f, _)| (p, f))
                        .collect()
                })
                .collect();
            figure(
                &mut h,
                line_chart(
                    "Reliability",
                    "mean predicted probability",
                    "observed fraction positive",
                    &labels,
                    &rel,
                    Some((0.0, 1.0)),
                )?,
                "Reliability diagram on the test rows (10 bins): a calibrated model follows the diagonal.",
            );
            let pr: Vec<Vec<(f64, f64)>> = self
                .outcomes
                .iter()
                .map(|o| o.curves.as_ref().expect("checked").pr.clone())
                .collect();
            figure(
                &mut h,
                line_chart(
                    "Precision-recall",
                    "recall",
                    "precision",
                    &labels,
                    &pr,
                    Some((0.0, 1.0)),
                )?,
                "Precision–recall curve on the test rows.",
            );
        }
        h.push_str("</body></html>\n");
        Ok(h)
    }
}

/// One SVG line chart, a series per candidate; `unit` fixes both axes to a
/// range and draws the diagonal (reliability) when the x and y agree.
fn line_chart(
    title: &str,
    x: &str,
    y: &str,
    labels: &[&str],
    series: &[Vec<(f64, f64)>],
    unit: Option<(f64, f64)>,
) -> Result<String, String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (480, 360)).into_drawing_area();
        let e = |e: &dyn std::fmt::Display| format!("cannot draw `{title}`: {e}");
        root.fill(&WHITE).map_err(|x| e(&x))?;
        let pts = series
            .iter()
            .flatten()
            .filter(|p| p.0.is_finite() && p.1.is_finite());
        let (xr, yr) = match unit {
            Some(r) => (r, r),
            None => {
                let (mut x0, mut x1, mut y0, mut y1) = (
                    f64::INFINITY,
                    f64::NEG_INFINITY,
                    f64::INFINITY,
                    f64::NEG_INFINITY,
                );
                for p in pts {
                    x0 = x0.min(p.0);
                    x1 = x1.max(p.0);
                    y0 = y0.min(p.1);
                    y1 = y1.max(p.1);
                }
                if x0.is_nan() || x1.is_nan() || x0 >= x1 {
                    (x0, x1) = (0.0, 1.0);
                }
                if y0.is_nan() || y1.is_nan() || y0 >= y1 {
                    (y0, y1) = (y0.min(0.0), y0.max(0.0) + 1.0);
                }
                let pad = 0.05 * (y1 - y0);
                ((x0, x1), (y0 - pad, y1 + pad))
            }
        };
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(36)
            .y_label_area_size(52)
            .build_cartesian_2d(xr.0..xr.1, yr.0..yr.1)
            .map_err(|x| e(&x))?;
        chart
            .configure_mesh()
            .x_desc(x)
            .y_desc(y)
            .draw()
            .map_err(|x| e(&x))?;
        if title == "Reliability" {
            chart
                .draw_series(LineSeries::new(
                    [(0.0, 0.0), (1.0, 1.0)],
                    BLACK.mix(0.4).stroke_width(1),
                ))
                .map_err(|x| e(&x))?;
        }
        for (i, (s, label)) in series.iter().zip(labels).enumerate() {
            let color = Palette99::pick(i).to_rgba();
            let pts = s
                .iter()
                .copied()
                .filter(|p| p.0.is_finite() && p.1.is_finite());
            chart
                .draw_series(LineSeries::new(pts, color.stroke_width(2)))
                .map_err(|x| e(&x))?
                .label(*label)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(match title {
                "Reliability" => SeriesLabelPosition::LowerRight,
                "Precision-recall" => SeriesLabelPosition::LowerLeft,
                _ => SeriesLabelPosition::UpperRight,
            })
            .draw()
            .map_err(|x| e(&x))?;
        root.present().map_err(|x| e(&x))?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_format_stably() {
        assert_eq!(fmt_value("recall", 0.123456), "0.1235");
        assert_eq!(fmt_value("MAE", 31245.7), "31246");
        assert_eq!(fmt_value("missed[s>=7]", 12.0), "12");
        assert_eq!(fmt_value("MRR", 1.0), "1.0000");
        assert_eq!(fmt_value("recall", 0.0), "0.0000");
        assert_eq!(fmt_value("ECE", f64::NAN), "n/a");
        assert_eq!(json_num(f64::NAN), "null");
        assert_eq!(json_num(3.0), "3.0");
        assert_eq!(json_str("a\"b\n"), "\"a\\\"b\\n\"");
    }
}
