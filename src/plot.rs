//! `lossc plot`: the loss and its derivative against the pred, several
//! specs overlaid, one column of panels per label value.
//!
//! Drawn with plotters' SVG backend (no font or system library needed):
//! the top row is the per-sample loss, the bottom row its derivative with
//! respect to the pred, for the data at each label value (classification)
//! or at a representative target (regression).

use crate::grad::Batch;
use crate::sema::types::{Dom, Range, Shape};
use crate::{Error, Loss};
use plotters::prelude::*;

/// One curve set: a spec (with its params) and its legend text.
pub struct Curve {
    /// The spec.
    pub loss: Loss,
    /// The legend entry (`focal_logits gamma=1`).
    pub label: String,
}

/// Why a plot cannot be drawn.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// A spec whose first pred is a vector.
    #[error("`{0}`: plots need a scalar pred (the first pred is a vector)")]
    VectorPred(String),
    /// Specs whose preds or labels differ.
    #[error("`{0}` and `{1}` cannot share a figure: {2}")]
    Mismatch(String, String, String),
    /// The SVG could not be written.
    #[error("cannot write `{0}`: {1}")]
    Write(String, String),
    /// No spec given.
    #[error("no spec to plot")]
    Empty,
}

/// The x range for a pred's domain: its open interval trimmed, or a
/// window around the target.
fn x_range(dom: &Dom, centre: f64, type_text: &str) -> (f64, f64) {
    let r = match dom {
        Dom::Range(r) => *r,
        _ => Range::REAL,
    };
    match (r.lo.is_finite(), r.hi.is_finite()) {
        (true, true) => {
            let w = r.hi - r.lo;
            (r.lo + 0.005 * w, r.hi - 0.005 * w)
        }
        (true, false) => (r.lo + 1e-3, r.lo + 10.0),
        (false, true) => (r.hi - 10.0, r.hi - 1e-3),
        (false, false) if type_text == "logit" => (-6.0, 6.0),
        (false, false) => (centre - 4.0, centre + 4.0),
    }
}

/// The panels: the label's name and values (or none, one panel).
fn panels(loss: &Loss) -> Option<(String, Vec<f64>)> {
    let c = loss.checked();
    c.data.iter().find_map(|v| match (&v.shape, &v.dom) {
        (Shape::Scalar, Dom::Labels(vs)) if vs.len() <= 5 => Some((v.name.clone(), vs.clone())),
        _ => None,
    })
}

/// The loss and derivative at `x` for data row `row` (the pred's own
/// value replaced).
fn point(d: &crate::grad::Derivation, base: &Batch, x: f64) -> (f64, f64) {
    let p = &d.preds[0];
    let mut b = base.clone();
    b.values.get_mut(&p.pred).expect("pred")[0] = vec![x];
    let v = d.objective_value(&b);
    let g = d.gradient_at(&b, p, p.per_sample, 0, None);
    (v, g)
}

/// Draws the figure into `path` (SVG).
pub fn plot(curves: &[Curve], path: &str) -> Result<(), Error> {
    let first = curves.first().ok_or(PlotError::Empty)?;
    let c0 = first.loss.checked();
    let pred0 = c0.preds.first().ok_or(PlotError::Empty)?;
    if pred0.shape != Shape::Scalar {
        return Err(PlotError::VectorPred(first.label.clone()).into());
    }
    let label0 = panels(&first.loss);
    for c in &curves[1..] {
        let p = &c.loss.checked().preds[0];
        if p.shape != Shape::Scalar {
            return Err(PlotError::VectorPred(c.label.clone()).into());
        }
        if p.dom != pred0.dom {
            return Err(PlotError::Mismatch(
                first.label.clone(),
                c.label.clone(),
                format!(
                    "their preds differ ({} and {})",
                    pred0.type_text, p.type_text
                ),
            )
            .into());
        }
        let l = panels(&c.loss);
        if l.as_ref().map(|x| &x.1) != label0.as_ref().map(|x| &x.1) {
            return Err(PlotError::Mismatch(
                first.label.clone(),
                c.label.clone(),
                "their labels take different values".into(),
            )
            .into());
        }
    }
    let columns: Vec<Option<f64>> = match &label0 {
        Some((_, vs)) => vs.iter().map(|v| Some(*v)).collect(),
        None => vec![None],
    };
    // Curves: per spec, per panel, (x, loss, derivative).
    let n = 241;
    let mut data: Vec<Vec<Vec<(f64, f64, f64)>>> = Vec::new();
    let mut xr = (0.0, 0.0);
    // One target for every curve (the first spec's), so curves align.
    let mut shared_centre: Option<f64> = None;
    for c in curves {
        let d = c.loss.derive()?;
        let chk = c.loss.checked();
        let mut rng = crate::grad::Rng::new(1);
        let sizes = chk
            .sizes
            .iter()
            .map(|(k, v)| (k.clone(), v.map_or(3, |v| v as usize)))
            .collect();
        let mut base = crate::grad::random_batch_sized(chk, 1, sizes, &mut rng);
        // Data at representative values: the label per panel, targets at 0
        // (or the middle of their range).
        for v in &chk.data {
            let x = crate::analyze::data_values(&v.dom, &Default::default())[0];
            if v.shape == Shape::Scalar {
                base.values.get_mut(&v.name).expect("data")[0] = vec![x];
            }
        }
        let target = chk
            .data
            .iter()
            .find(|v| v.shape == Shape::Scalar && !matches!(v.dom, Dom::Labels(_)));
        let mut centre = target.map_or(0.0, |v| base.values[&v.name][0][0]);
        if let (Some(t), Some(sc)) = (target, shared_centre) {
            let fits = match &t.dom {
                Dom::Range(r) => {
                    (if r.lo_closed { sc >= r.lo } else { sc > r.lo })
                        && (if r.hi_closed { sc <= r.hi } else { sc < r.hi })
                }
                _ => true,
            };
            if fits {
                base.values.get_mut(&t.name).expect("data")[0] = vec![sc];
                centre = sc;
            }
        }
        let p = &chk.preds[0];
        if shared_centre.is_none() {
            shared_centre = Some(centre);
            xr = x_range(&p.dom, centre, &p.type_text);
        }
        let mut per_panel = Vec::new();
        for col in &columns {
            let mut b = base.clone();
            if let (Some(v), Some((name, _))) = (col, panels(&c.loss)) {
                b.values.get_mut(&name).expect("label")[0] = vec![*v];
            }
            let pts: Vec<(f64, f64, f64)> = (0..n)
                .map(|i| {
                    let x = xr.0 + (xr.1 - xr.0) * i as f64 / (n - 1) as f64;
                    let (v, g) = point(&d, &b, x);
                    (x, v, g)
                })
                .collect();
            per_panel.push(pts);
        }
        data.push(per_panel);
    }
    let w = 420 * columns.len() as u32 + 40;
    let root = SVGBackend::new(path, (w.max(520), 640)).into_drawing_area();
    let err = |e: &dyn std::fmt::Display| Error::from(PlotError::Write(path.into(), e.to_string()));
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let names: Vec<&str> = curves.iter().map(|c| c.label.as_str()).collect();
    let root = root
        .titled(&names.join(" vs "), ("sans-serif", 22))
        .map_err(|e| err(&e))?;
    let areas = root.split_evenly((2, columns.len()));
    let pname = pred0.name.clone();
    for (k, col) in columns.iter().enumerate() {
        for (row, what) in [(0usize, "loss"), (1, "derivative")] {
            let area = &areas[row * columns.len() + k];
            let ys: Vec<f64> = data
                .iter()
                .flat_map(|s| s[k].iter().map(|p| if row == 0 { p.1 } else { p.2 }))
                .filter(|v| v.is_finite())
                .collect();
            let (mut lo, mut hi) = ys
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
                    (a.min(*v), b.max(*v))
                });
            if !lo.is_finite() || !hi.is_finite() {
                (lo, hi) = (-1.0, 1.0);
            }
            // Very steep curves (log(0) at an edge) would flatten the rest.
            let cap = 8.0;
            let spread = |v: &f64| v.abs();
            let typical = {
                let mut s: Vec<f64> = ys.iter().map(spread).collect();
                s.sort_by(f64::total_cmp);
                s.get(s.len() * 9 / 10).copied().unwrap_or(1.0).max(1e-9)
            };
            hi = hi.min(cap * typical);
            lo = lo.max(-cap * typical);
            let pad = 0.05 * (hi - lo).max(1e-9);
            let title = match (col, &label0) {
                (Some(v), Some((name, _))) => {
                    format!("{what}, {name} = {}", crate::analyze::num(*v))
                }
                _ => what.to_string(),
            };
            let mut chart = ChartBuilder::on(area)
                .caption(title, ("sans-serif", 16))
                .margin(10)
                .x_label_area_size(32)
                .y_label_area_size(48)
                .build_cartesian_2d(xr.0..xr.1, (lo - pad)..(hi + pad))
                .map_err(|e| err(&e))?;
            chart
                .configure_mesh()
                .x_desc(pname.as_str())
                .y_desc(if row == 0 {
                    "loss".to_string()
                } else {
                    format!("d loss / d {pname}")
                })
                .draw()
                .map_err(|e| err(&e))?;
            for (i, s) in data.iter().enumerate() {
                let color = Palette99::pick(i).to_rgba();
                let pts = s[k]
                    .iter()
                    .map(|p| (p.0, if row == 0 { p.1 } else { p.2 }))
                    .filter(|(_, y)| y.is_finite() && *y >= lo - pad && *y <= hi + pad);
                let series = chart
                    .draw_series(LineSeries::new(pts, color.stroke_width(2)))
                    .map_err(|e| err(&e))?;
                if k == 0 && row == 0 {
                    series.label(names[i]).legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                    });
                }
            }
            if k == 0 && row == 0 {
                chart
                    .configure_series_labels()
                    .background_style(WHITE.mix(0.85))
                    .border_style(BLACK)
                    .position(SeriesLabelPosition::UpperMiddle)
                    .draw()
                    .map_err(|e| err(&e))?;
            }
        }
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
