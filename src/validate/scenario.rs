//! Built-in scenarios: generated data sets, each with the candidate losses
//! that reproduce one classic loss-design lesson, so `lossc validate
//! --scenario NAME` needs no files. Data are drawn from a seeded generator;
//! the candidates are the bundled examples where one fits, otherwise a few
//! lines of spec written here. Each scenario ends with a one-line
//! conclusion that quotes the measured numbers, not the expected ones.

use super::{Candidate, Options, Table, ValidateError, Validation};
use crate::Loss;
use crate::grad::Rng;
use ndarray::{Array1, Array2, ArrayD};
use std::collections::BTreeMap;

/// A ready-to-run scenario.
pub struct Scenario {
    /// Its name on the command line.
    pub name: &'static str,
    /// The lesson it reproduces.
    pub about: &'static str,
    /// The generated data.
    pub table: Table,
    /// The losses compared, baseline first.
    pub candidates: Vec<Candidate>,
    /// Features, slices and other options the scenario needs.
    pub options: Options,
    conclude: fn(&Validation) -> String,
}

/// The scenarios, in the order the README shows them.
pub const NAMES: [&str; 5] = ["moderation", "xray", "houses", "multilabel", "ranking"];

impl Scenario {
    /// Trains and scores every candidate and states the lesson with the
    /// numbers measured.
    pub fn run(&self) -> Result<Validation, ValidateError> {
        let mut v = super::validate(&self.candidates, &self.table, &self.options)?;
        v.conclusion = Some((self.conclude)(&v));
        v.data = format!("scenario `{}` ({})", self.name, self.about);
        Ok(v)
    }
}

fn spec(label: &str, origin: &str, text: &str, params: &[(&str, f64)]) -> Candidate {
    let mut loss = Loss::from_named_source(origin, text).expect("built-in specs are valid");
    for (k, v) in params {
        loss = loss
            .with_param(k, *v)
            .expect("built-in params are in range");
    }
    Candidate {
        label: label.to_string(),
        loss,
    }
}

fn table(name: &str, cols: Vec<(&str, ArrayD<f64>)>) -> Table {
    let arrays: BTreeMap<String, ArrayD<f64>> =
        cols.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    Table::from_arrays(format!("scenario `{name}`"), arrays).expect("generated columns agree")
}

fn features(x: &Array2<f64>, prefix: &str) -> Vec<(String, ArrayD<f64>)> {
    (0..x.ncols())
        .map(|c| (format!("{prefix}{c}"), x.column(c).to_owned().into_dyn()))
        .collect()
}

fn with_features(
    mut cols: Vec<(&str, ArrayD<f64>)>,
    feats: &[(String, ArrayD<f64>)],
) -> Vec<(String, ArrayD<f64>)> {
    let mut out: Vec<(String, ArrayD<f64>)> =
        cols.drain(..).map(|(k, v)| (k.to_string(), v)).collect();
    out.extend(feats.iter().cloned());
    out
}

fn table_of(name: &str, cols: Vec<(String, ArrayD<f64>)>) -> Table {
    table(
        name,
        cols.iter().map(|(k, v)| (k.as_str(), v.clone())).collect(),
    )
}

/// The scenario called `name`, with data drawn from `seed`.
pub fn scenario(name: &str, seed: u64) -> Result<Scenario, ValidateError> {
    match name {
        "moderation" => Ok(moderation(seed)),
        "xray" => Ok(xray(seed)),
        "houses" => Ok(houses(seed)),
        "multilabel" => Ok(multilabel(seed)),
        "ranking" => Ok(ranking(seed)),
        _ => Err(ValidateError::Setup {
            reason: format!("unknown scenario `{name}`"),
            hint: Some(format!("the scenarios are: {}", NAMES.join(", "))),
        }),
    }
}

fn options(features: usize, prefix: &str, seed: u64) -> Options {
    Options {
        features: (0..features).map(|c| format!("{prefix}{c}")).collect(),
        seed,
        ..Options::default()
    }
}

const BCE_LOGITS: &str = "loss bce\ntask binary\ndata y : label {0, 1}\npred z : logit\nminimize mean(bce_logits(y, z))\n";

/// 0.5% of posts violate policy; a violation's features are shifted, but
/// overlap the normal posts.
fn moderation(seed: u64) -> Scenario {
    let (n, pos, f) = (20_000, 100, 10);
    let mut rng = Rng::new(seed ^ 0x30DE);
    let mut x = Array2::zeros((n, f));
    let mut y = Array1::zeros(n);
    for r in 0..n {
        let violates = r % (n / pos) == 0;
        y[r] = f64::from(u8::from(violates));
        for c in 0..f {
            let shift = if violates && c < 4 { 1.2 } else { 0.0 };
            x[[r, c]] = rng.normal() + shift;
        }
    }
    let cols = with_features(vec![("y", y.into_dyn())], &features(&x, "x"));
    Scenario {
        name: "moderation",
        about: "0.5% positives: plain BCE is ~99.5% accurate yet catches almost no violations; weighted BCE and focal loss catch them",
        table: table_of("moderation", cols),
        candidates: vec![
            spec("bce", "scenario/moderation/bce.loss", BCE_LOGITS, &[]),
            spec(
                "weighted bce (w=20)",
                "examples/moderation.loss",
                include_str!("../../examples/moderation.loss"),
                &[],
            ),
            spec(
                "focal (alpha=0.99)",
                "examples/focal_logits.loss",
                include_str!("../../examples/focal_logits.loss"),
                &[("alpha", 0.99)],
            ),
        ],
        options: options(f, "x", seed),
        conclude: |v| {
            let r = |l: &str, c: &str| v.value(l, c).unwrap_or(f64::NAN);
            format!(
                "plain BCE is {:.1}% accurate but recalls {:.0}% of violations; weighted BCE recalls {:.0}% and focal {:.0}%",
                100.0 * r("bce", "accuracy"),
                100.0 * r("bce", "recall"),
                100.0 * r("weighted bce (w=20)", "recall"),
                100.0 * r("focal (alpha=0.99)", "recall"),
            )
        },
    }
}

/// 5% of X-rays are abnormal; mild findings are obvious, severe ones
/// (severity 7-10) are subtler and lie in another direction of feature
/// space, so a loss that weights errors by severity turns the boundary
/// towards them.
fn xray(seed: u64) -> Scenario {
    let (n, f) = (10_000, 8);
    let mut rng = Rng::new(seed ^ 0x4EA7);
    let mut x = Array2::zeros((n, f));
    let mut y = Array1::zeros(n);
    let mut s = Array1::from_elem(n, 1.0);
    for r in 0..n {
        let abnormal = r % 20 == 0;
        let severe = abnormal && (r / 20) % 10 < 3;
        if abnormal {
            y[r] = 1.0;
            s[r] = if severe {
                7.0 + (rng.next_u64() % 4) as f64
            } else {
                1.0 + (rng.next_u64() % 6) as f64
            };
        }
        for c in 0..f {
            let shift = match (abnormal, severe, c) {
                (true, false, 0) => 2.5,
                (true, true, 0) => 0.6,
                (true, true, 1) => 1.6,
                _ => 0.0,
            };
            x[[r, c]] = rng.normal() + shift;
        }
    }
    let cols = with_features(
        vec![("y", y.into_dyn()), ("s", s.into_dyn())],
        &features(&x, "x"),
    );
    let xray = include_str!("../../examples/xray_triage.loss");
    let mut options = options(f, "x", seed);
    options.slice = Some(("s".into(), 7.0));
    Scenario {
        name: "xray",
        about: "95% normal, a miss 20x worse than a false alarm, severity 1-10: weighting by severity lowers misses on severe cases",
        table: table_of("xray", cols),
        candidates: vec![
            spec(
                "bce",
                "scenario/xray/bce.loss",
                "loss bce\ntask binary\ndata y : label {0, 1}\npred p : prob\nminimize mean(bce(y, p))\n",
                &[],
            ),
            spec(
                "class-weighted (alpha=0)",
                "scenario/xray/class_weighted.loss",
                "loss class_weighted\ntask binary\ndata y : label {0, 1}\npred p : prob\ncost fn = 20, fp = 1\nminimize mean((if y == 1 then 20 else 1) * bce(y, p))\n",
                &[],
            ),
            spec(
                "severity-weighted (alpha=1)",
                "examples/xray_triage.loss",
                xray,
                &[],
            ),
        ],
        options,
        conclude: |v| {
            // The slice may be changed on the command line: read whichever it is.
            let col = v
                .columns
                .iter()
                .find(|c| c.starts_with("missed["))
                .cloned()
                .unwrap_or_default();
            let m = |l: &str| v.value(l, &col).unwrap_or(f64::NAN);
            format!(
                "abnormal X-rays missed where {}: plain BCE {}, class-weighted {}, severity-weighted {}",
                col.trim_start_matches("missed[").trim_end_matches(']'),
                m("bce"),
                m("class-weighted (alpha=0)"),
                m("severity-weighted (alpha=1)")
            )
        },
    }
}

/// 10,000 houses at 100K-500K and 50 luxury houses at 2M-10M whose
/// features look like the best regular houses.
fn houses(seed: u64) -> Scenario {
    let (regular, luxury, f) = (10_000, 50, 4);
    let n = regular + luxury;
    let mut rng = Rng::new(seed ^ 0x4005);
    let mut x = Array2::zeros((n, f));
    let mut price = Array1::zeros(n);
    for r in 0..n {
        let lux = r % (n / luxury) == 0 && r / (n / luxury) < luxury;
        for c in 0..f {
            x[[r, c]] = if lux && c < 2 {
                0.8 + 0.2 * rng.uniform()
            } else {
                rng.uniform()
            };
        }
        price[r] = if lux {
            // log-uniform in [2M, 10M]
            2e6 * (5f64.ln() * rng.uniform()).exp()
        } else {
            let base = 0.5 * x[[r, 0]] + 0.3 * x[[r, 1]] - 0.1 * x[[r, 2]] + 0.3 * x[[r, 3]];
            (100_000.0 + 400_000.0 * (base + 0.1) / 1.2 + 20_000.0 * rng.normal())
                .clamp(100_000.0, 500_000.0)
        };
    }
    let cols = with_features(vec![("price", price.into_dyn())], &features(&x, "x"));
    let reg = |name: &str, body: &str| {
        format!(
            "loss {name}\ntask regression\ndata price : real (0, inf)\npred yhat : real\nparam delta = 50000 in (0, inf)\nminimize mean({body})\n"
        )
    };
    let log_mse = "loss log_mse\ntask regression\ndata price : real (0, inf)\npred log_price : real\nminimize mean(mse(log(price), log_price))\n";
    Scenario {
        name: "houses",
        about: "50 luxury houses among 10,000: MSE on price fits the regular houses badly; Huber, MAE and MSE on log-price fit them well",
        table: table_of("houses", cols),
        candidates: vec![
            spec(
                "mse",
                "scenario/houses/mse.loss",
                &reg("mse", "mse(price, yhat)"),
                &[],
            ),
            spec(
                "huber (delta=50K)",
                "scenario/houses/huber.loss",
                &reg("huber", "huber(price, yhat, delta)"),
                &[],
            ),
            spec(
                "mae",
                "scenario/houses/mae.loss",
                &reg("mae", "mae(price, yhat)"),
                &[],
            ),
            spec(
                "mse on log-price",
                "scenario/houses/log_mse.loss",
                log_mse,
                &[],
            ),
            spec(
                "huber on log-price",
                "examples/house_prices.loss",
                include_str!("../../examples/house_prices.loss"),
                &[],
            ),
        ],
        options: options(f, "x", seed),
        conclude: |v| {
            let m = |l: &str| v.value(l, "bulk MAE").unwrap_or(f64::NAN);
            format!(
                "mean absolute error on the regular houses: MSE {:.0}; Huber {:.0}, MAE {:.0}, MSE on log-price {:.0}",
                m("mse"),
                m("huber (delta=50K)"),
                m("mae"),
                m("mse on log-price")
            )
        },
    }
}

/// 100 topics, 3-5 per article; the features are the topics seen through noise.
fn multilabel(seed: u64) -> Scenario {
    let (n, l) = (5_000, 100);
    let mut rng = Rng::new(seed ^ 0x3A11);
    let mut y = Array2::zeros((n, l));
    let mut x = Array2::zeros((n, l));
    for r in 0..n {
        let k = 3 + (rng.next_u64() % 3) as usize;
        let mut set = 0;
        while set < k {
            let c = (rng.next_u64() % l as u64) as usize;
            if y[[r, c]] == 0.0 {
                y[[r, c]] = 1.0;
                set += 1;
            }
        }
        for c in 0..l {
            x[[r, c]] = y[[r, c]] + 0.25 * rng.normal();
        }
    }
    let cols = with_features(vec![("y", y.into_dyn())], &features(&x, "x"));
    let softmax = "loss softmax_cce\ntask multilabel\ndata y : multihot [L]\npred z : vector [L]\nminimize mean(-sum[c](y[c] * log(softmax(z)[c])))\n";
    Scenario {
        name: "multilabel",
        about: "3-5 true labels of 100: softmax + CCE predicts about one label per example; sigmoid + BCE predicts the right number",
        table: table_of("multilabel", cols),
        candidates: vec![
            spec(
                "softmax + cce",
                "scenario/multilabel/softmax_cce.loss",
                softmax,
                &[],
            ),
            spec(
                "sigmoid + bce",
                "examples/multilabel.loss",
                include_str!("../../examples/multilabel.loss"),
                &[],
            ),
        ],
        options: options(l, "x", seed),
        conclude: |v| {
            let m = |l: &str, c: &str| v.value(l, c).unwrap_or(f64::NAN);
            format!(
                "labels predicted per article (true: {:.2}): softmax + CCE {:.2}, sigmoid + BCE {:.2}; micro-F1 {:.3} vs {:.3}",
                m("sigmoid + bce", "true labels/example"),
                m("softmax + cce", "labels/example"),
                m("sigmoid + bce", "labels/example"),
                m("softmax + cce", "micro-F1"),
                m("sigmoid + bce", "micro-F1"),
            )
        },
    }
}

/// Queries whose documents share a query-level offset in two features:
/// relevance is graded within each query, so only comparisons inside a
/// query say what makes a document better.
fn ranking(seed: u64) -> Scenario {
    let (queries, docs, f) = (120, 20, 6);
    let n = queries * docs;
    let w = [1.0, 1.0, 0.5, 0.5, 0.25, 0.25];
    let sq = [3.0, 3.0, 0.0, 0.0, 0.0, 0.0];
    let mut rng = Rng::new(seed ^ 0x4A4C);
    let mut x = Array2::zeros((n, f));
    let mut rel = Array1::zeros(n);
    let mut query = Array1::zeros(n);
    for q in 0..queries {
        let off: Vec<f64> = sq.iter().map(|s| s * rng.normal()).collect();
        let mut util = Vec::with_capacity(docs);
        for d in 0..docs {
            let r = q * docs + d;
            query[r] = q as f64;
            let mut u = 0.0;
            for c in 0..f {
                let v = rng.normal();
                x[[r, c]] = v + off[c];
                u += w[c] * v;
            }
            util.push((u + 0.3 * rng.normal(), r));
        }
        // Grades by rank within the query: 1 doc at 4, 2 at 3, 3 at 2, 4 at 1.
        util.sort_by(|a, b| b.0.total_cmp(&a.0));
        for (rank, (_, r)) in util.iter().enumerate() {
            rel[*r] = match rank {
                0 => 4.0,
                1..=2 => 3.0,
                3..=5 => 2.0,
                6..=9 => 1.0,
                _ => 0.0,
            };
        }
    }
    let cols = with_features(
        vec![("rel", rel.into_dyn()), ("query", query.into_dyn())],
        &features(&x, "x"),
    );
    let mse = "loss mse\ntask ranking\ndata rel : real [0, 4]\npred s : real\nminimize mean(mse(rel, s))\n";
    let ranknet = "loss ranknet\ntask ranking\ndata rel : real [0, 4]\ndata query : real\npred s : real\nminimize mean(sum[j: query@j == query and rel@j < rel](softplus(s@j - s)))\n";
    Scenario {
        name: "ranking",
        about: "MSE on relevance vs pairwise hinge and RankNet: only pairwise losses compare documents within a query",
        table: table_of("ranking", cols),
        candidates: vec![
            spec("mse on relevance", "scenario/ranking/mse.loss", mse, &[]),
            spec(
                "pairwise hinge",
                "examples/pairwise_hinge_ranking.loss",
                include_str!("../../examples/pairwise_hinge_ranking.loss"),
                &[],
            ),
            spec("ranknet", "scenario/ranking/ranknet.loss", ranknet, &[]),
        ],
        options: options(f, "x", seed),
        conclude: |v| {
            let m = |l: &str| v.value(l, "NDCG@10").unwrap_or(f64::NAN);
            format!(
                "NDCG@10: MSE on relevance {:.3}, pairwise hinge {:.3}, RankNet {:.3}",
                m("mse on relevance"),
                m("pairwise hinge"),
                m("ranknet")
            )
        },
    }
}
