//! Task metrics for `lossc validate` (step 4): once a model has been trained
//! with a custom loss, these say whether it is any good at the job the loss
//! was designed for, in the units the user reports (accuracy, AUC, cost,
//! NDCG, recall@k), not in the loss's own units.
//!
//! Conventions shared by every function, so that a report never panics and
//! never differs between runs:
//!
//! - Inputs that disagree in length (or, for matrices, in rows or columns)
//!   are cut to their common prefix; validation reports a number rather than
//!   aborting a training run that has already been paid for.
//! - Every sort uses [`f64::total_cmp`] after identifying `-0.0` with `0.0`
//!   and all NaNs with each other, and every remaining tie is broken by an
//!   explicit rule, so results are bit-for-bit reproducible.
//! - Precision, recall and F1 follow scikit-learn's `zero_division=0`: a
//!   ratio with a zero denominator is `0.0`, because a model that never
//!   predicts a class has earned no credit for it.
//! - A metric that is undefined for the input (an AUC with one class, a mean
//!   over zero examples or queries) is [`f64::NAN`], so that it cannot be
//!   mistaken for a bad or a perfect score.

use ndarray::{ArrayView2, s};
use std::cmp::Ordering;
use std::collections::BTreeMap;

/// Number of equal-width bins of every expected calibration error here, the
/// customary choice (Guo et al., 2017), so numbers compare across reports.
const ECE_BINS: usize = 10;

/// Log-loss floor on the true class's probability: a model that puts exactly
/// zero on the truth costs ln(10¹⁵) ≈ 34.5 instead of infinity, as in
/// scikit-learn, so one such row cannot swamp the mean.
const LOG_LOSS_EPS: f64 = 1e-15;

/// Binary classification at a threshold, plus threshold-free scores.
///
/// The thresholded numbers describe the decisions a deployment would make;
/// the AUCs and ECE separate ranking quality from calibration, which is what
/// a custom loss usually trades between.
#[derive(Clone, Debug, PartialEq)]
pub struct Binary {
    /// Fraction of correct decisions at p ≥ 0.5; NaN on empty input.
    pub accuracy: f64,
    /// TP / (TP + FP) at p ≥ 0.5; 0 when nothing is predicted positive.
    pub precision: f64,
    /// TP / (TP + FN) at p ≥ 0.5; 0 when there is no positive example.
    pub recall: f64,
    /// 2TP / (2TP + FP + FN) at p ≥ 0.5; 0 when that denominator is 0.
    pub f1: f64,
    /// Probability that a random positive outscores a random negative (ties
    /// count ½); NaN unless both classes occur.
    pub roc_auc: f64,
    /// Average precision (area under the precision-recall step curve); NaN
    /// when there is no positive example.
    pub pr_auc: f64,
    /// Expected calibration error over 10 equal-width bins; NaN on empty input.
    pub ece: f64,
    /// Expected cost per example when deciding at p ≥ 0.5, if costs were given.
    pub cost_at_half: Option<f64>,
    /// Expected cost per example when deciding at the Bayes threshold.
    pub cost_at_optimal: Option<f64>,
    /// The Bayes threshold t* = c_fp / (c_fp + c_fn) that `cost_at_optimal` used.
    pub optimal_threshold: Option<f64>,
}

/// Scores a binary classifier the ways a user might judge it: decisions at
/// the usual 0.5, ranking (ROC-AUC, average precision), calibration (ECE),
/// and, given business costs, what the errors cost at 0.5 versus at the
/// threshold a calibrated model should use, which shows whether training
/// with a cost-aware loss was worth it.
///
/// `y[i]` true = positive; `p[i]` the model's probability of positive.
/// Decisions are p ≥ 0.5 (a NaN probability is never positive).
///
/// `cost` = `Some((c_fn, c_fp))`: expected cost per example =
/// (c_fn · #FN + c_fp · #FP) / n, both at threshold 0.5 and at the Bayes
/// threshold t* = c_fp / (c_fp + c_fn), which is cost-optimal for calibrated
/// probabilities (decisions p ≥ t*); `optimal_threshold` = `Some(t*)`. Costs
/// are meant to be non-negative; when c_fp + c_fn = 0 every threshold costs
/// the same and t* = 0.5 is used. Costs are NaN on empty input.
///
/// Conventions: precision, recall and F1 use `zero_division=0`; accuracy
/// and ECE are NaN on empty input; ROC-AUC (Mann–Whitney, ties ½, exact in
/// O(n log n)) is NaN unless both classes occur; average precision follows
/// scikit-learn (Σ over distinct thresholds of (R_k − R_{k−1}) · P_k, tied
/// scores form one threshold) and is NaN without positives. Scores are
/// ordered by [`f64::total_cmp`], so a NaN score ranks above +∞.
pub fn binary(y: &[bool], p: &[f64], cost: Option<(f64, f64)>) -> Binary {
    let n = y.len().min(p.len());
    let (y, p) = (&y[..n], &p[..n]);
    let at_half = Confusion::at(y, p, 0.5);
    let accuracy = (at_half.tp + at_half.tn) as f64 / n as f64;
    let groups = groups_desc(y, p);
    let (cost_at_half, cost_at_optimal, optimal_threshold) = match cost {
        Some((c_fn, c_fp)) => {
            let sum = c_fp + c_fn;
            let t = if sum == 0.0 { 0.5 } else { c_fp / sum };
            let at_t = Confusion::at(y, p, t);
            (
                Some(at_half.cost(c_fn, c_fp)),
                Some(at_t.cost(c_fn, c_fp)),
                Some(t),
            )
        }
        None => (None, None, None),
    };
    Binary {
        accuracy,
        precision: ratio(at_half.tp as f64, (at_half.tp + at_half.fp) as f64),
        recall: ratio(at_half.tp as f64, (at_half.tp + at_half.fn_) as f64),
        f1: f1_of(at_half.tp, at_half.fp, at_half.fn_),
        roc_auc: roc_auc(&groups),
        pr_auc: average_precision(&groups),
        ece: ece(&reliability(y, p, ECE_BINS)),
        cost_at_half,
        cost_at_optimal,
        optimal_threshold,
    }
}

/// The precision-recall curve, for plotting the trade-off a single threshold
/// hides: points (recall, precision), one per distinct score (tied scores
/// form one threshold), from high threshold to low, starting at (0, 1).
///
/// Without any positive example recall is 0 at every threshold
/// (`zero_division=0`); empty input yields just the starting point. Scores
/// are ordered by [`f64::total_cmp`] (a NaN score ranks above +∞).
/// [`Binary::pr_auc`] is the area under exactly these points.
pub fn pr_curve(y: &[bool], p: &[f64]) -> Vec<(f64, f64)> {
    pr_points(&groups_desc(y, p))
}

/// Reliability diagram, for showing where a model is over- or
/// under-confident rather than a single ECE number: for each of `bins`
/// equal-width bins on [0, 1] holding at least one example, in increasing
/// order, (mean predicted p, observed fraction positive, count).
///
/// Bin k holds the p with ⌊p · bins⌋ = k; p = 1 (and anything above) goes
/// into the last bin, p < 0 and NaN into the first. `bins` = 0 yields no bins.
pub fn reliability(y: &[bool], p: &[f64], bins: usize) -> Vec<(f64, f64, usize)> {
    binned(y.iter().zip(p).map(|(&y, &p)| (p, y)), bins)
}

/// Multiclass classification scores.
///
/// Accuracy and macro-F1 judge the decisions (macro-F1 so rare classes
/// count); log-loss and ECE judge the probabilities, which a custom loss may
/// distort even when decisions improve.
#[derive(Clone, Debug, PartialEq)]
pub struct Multiclass {
    /// Fraction of rows whose argmax is the true class; NaN on empty input.
    pub accuracy: f64,
    /// Unweighted mean of per-class F1 over classes seen in truth or
    /// predictions; 0 when there are none.
    pub macro_f1: f64,
    /// Mean of −ln(max(`p[i, y[i]]`, 10⁻¹⁵)); NaN on empty input.
    pub log_loss: f64,
    /// Top-label expected calibration error over 10 bins; NaN on empty input.
    pub ece: f64,
}

/// Scores a multiclass classifier on its decisions and its probabilities.
///
/// `y[i]` is the class index; rows of `p` (n × C) are class probabilities.
/// The prediction is the argmax, ties going to the lowest index (ordering by
/// [`f64::total_cmp`], so a NaN probability beats every number). Macro-F1
/// averages per-class F1 over the classes that appear in `y` or among the
/// predictions (a class never seen either way has no F1 to speak of).
/// log_loss = mean of −ln(max(`p[i, y[i]]`, 10⁻¹⁵)); a NaN probability
/// propagates. ECE is top-label: confidence = the max probability, correct =
/// argmax == y, 10 equal-width bins. A label `y[i]` ≥ C is never predicted
/// and has probability 0; a row with no columns predicts nothing, with
/// confidence 0. Accuracy, log-loss and ECE are NaN on empty input.
pub fn multiclass(y: &[usize], p: ArrayView2<'_, f64>) -> Multiclass {
    let n = y.len().min(p.nrows());
    let classes = p.ncols();
    let mut correct = 0usize;
    let mut loss = 0.0;
    let mut per_class: BTreeMap<usize, (usize, usize, usize)> = BTreeMap::new();
    let mut conf = Vec::with_capacity(n);
    for (i, &truth) in y.iter().enumerate().take(n) {
        let row = p.row(i);
        let pred = (0..classes).reduce(|best, j| {
            if canon(row[j]).total_cmp(&canon(row[best])) == Ordering::Greater {
                j
            } else {
                best
            }
        });
        let q = if truth < classes { row[truth] } else { 0.0 };
        // Not `f64::max`, which would hide a NaN probability.
        loss -= if q < LOG_LOSS_EPS { LOG_LOSS_EPS } else { q }.ln();
        let hit = pred == Some(truth);
        if hit {
            correct += 1;
            per_class.entry(truth).or_default().0 += 1;
        } else {
            per_class.entry(truth).or_default().2 += 1;
            if let Some(k) = pred {
                per_class.entry(k).or_default().1 += 1;
            }
        }
        conf.push((pred.map_or(0.0, |k| row[k]), hit));
    }
    let macro_f1 = mean_or_zero(per_class.values().map(|&(tp, fp, fn_)| f1_of(tp, fp, fn_)));
    Multiclass {
        accuracy: correct as f64 / n as f64,
        macro_f1,
        log_loss: loss / n as f64,
        ece: ece(&binned(conf.into_iter(), ECE_BINS)),
    }
}

/// Multilabel classification scores.
///
/// Micro-F1 weights every (example, label) decision equally, macro-F1 every
/// label, and the label counts reveal a model that wins F1 by predicting
/// too many or too few labels.
#[derive(Clone, Debug, PartialEq)]
pub struct Multilabel {
    /// F1 of all (example, label) decisions pooled; 0 when nothing is set
    /// or predicted.
    pub micro_f1: f64,
    /// Mean per-label F1 over labels set or predicted at least once; 0 if none.
    pub macro_f1: f64,
    /// Mean number of labels predicted per example; NaN on empty input.
    pub labels_per_example: f64,
    /// Mean number of labels truly set per example; NaN on empty input.
    pub true_labels_per_example: f64,
}

/// Scores a multilabel classifier, whose labels are independent decisions.
///
/// `y` is n × L of 0/1 as f64 (> 0.5 means set); `p` is n × L probabilities;
/// a label is predicted when p ≥ 0.5 (a NaN is neither set nor predicted).
/// macro_f1 averages per-label F1 over labels that are set in `y` or
/// predicted at least once (0 if none), so an absent, never-predicted label
/// neither rewards nor punishes. F1s use `zero_division=0`; the per-example
/// label counts are NaN on empty input.
pub fn multilabel(y: ArrayView2<'_, f64>, p: ArrayView2<'_, f64>) -> Multilabel {
    let n = y.nrows().min(p.nrows());
    let labels = y.ncols().min(p.ncols());
    let mut counts = vec![(0usize, 0usize, 0usize); labels];
    let (mut predicted, mut set) = (0usize, 0usize);
    for i in 0..n {
        for (l, c) in counts.iter_mut().enumerate() {
            let truth = y[[i, l]] > 0.5;
            let pred = p[[i, l]] >= 0.5;
            set += usize::from(truth);
            predicted += usize::from(pred);
            match (truth, pred) {
                (true, true) => c.0 += 1,
                (false, true) => c.1 += 1,
                (true, false) => c.2 += 1,
                (false, false) => {}
            }
        }
    }
    let (tp, fp, fn_) = counts
        .iter()
        .fold((0, 0, 0), |a, c| (a.0 + c.0, a.1 + c.1, a.2 + c.2));
    let macro_f1 = mean_or_zero(
        counts
            .iter()
            .filter(|c| c.0 + c.1 + c.2 > 0)
            .map(|&(tp, fp, fn_)| f1_of(tp, fp, fn_)),
    );
    Multilabel {
        micro_f1: f1_of(tp, fp, fn_),
        macro_f1,
        labels_per_example: predicted as f64 / n as f64,
        true_labels_per_example: set as f64 / n as f64,
    }
}

/// Regression errors.
///
/// RMSE is what a squared loss optimises, MAE and the median absolute error
/// what a robust loss should improve; reporting all three shows which
/// estimand the trained model actually hit.
#[derive(Clone, Debug, PartialEq)]
pub struct Regression {
    /// √(mean (y − ŷ)²); NaN on empty input.
    pub rmse: f64,
    /// mean |y − ŷ|; NaN on empty input.
    pub mae: f64,
    /// median |y − ŷ| (mean of the two middle values for an even count);
    /// NaN on empty input.
    pub median_ae: f64,
    /// Number of examples scored.
    pub n: usize,
}

/// Scores point predictions `yhat` against targets `y`.
///
/// All fields are NaN (and n = 0) on empty input. The median of an even
/// count is the mean of the two middle values; errors are sorted with
/// [`f64::total_cmp`], so NaN errors sort last (and make RMSE and MAE NaN).
pub fn regression(y: &[f64], yhat: &[f64]) -> Regression {
    let mut err: Vec<f64> = y.iter().zip(yhat).map(|(a, b)| (a - b).abs()).collect();
    let n = err.len();
    let sq: f64 = err.iter().map(|e| e * e).sum();
    let abs: f64 = err.iter().sum();
    err.sort_by(f64::total_cmp);
    let median_ae = match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => err[n / 2],
        _ => f64::midpoint(err[n / 2 - 1], err[n / 2]),
    };
    Regression {
        rmse: (sq / n as f64).sqrt(),
        mae: abs / n as f64,
        median_ae,
        n,
    }
}

/// Learning-to-rank scores, averaged over queries.
///
/// NDCG@10 judges the whole top of the list with graded relevance; MRR how
/// soon the first useful result appears.
#[derive(Clone, Debug, PartialEq)]
pub struct Ranking {
    /// Mean NDCG@10 (gain 2^rel − 1); NaN when no query counts.
    pub ndcg_at_10: f64,
    /// Mean reciprocal rank of the first relevant document; NaN when no
    /// query counts.
    pub mrr: f64,
    /// Queries averaged over: those with at least one relevant document.
    pub queries: usize,
}

/// Scores a ranker per query and averages.
///
/// `group[i]` is the query id (any f64, compared exactly: `-0.0` and `0.0`
/// are one query, and so are all NaN ids; rows of one query need not be
/// contiguous), `rel[i]` graded relevance ≥ 0, `score[i]` the model's score.
/// NDCG@10 uses gain 2^rel − 1 and discount 1/log2(rank + 1), averaged over
/// queries whose ideal DCG > 0: a query with no relevant document has no
/// NDCG and is skipped, and not counted in `queries`. Ties in score are
/// broken pessimistically (the less relevant document ranks first) so that a
/// constant scorer does not look good. MRR is the reciprocal rank of the
/// first document with rel > 0 over the whole list (not cut at 10),
/// averaged over the same queries. Both are NaN when no query counts.
pub fn ranking(group: &[f64], rel: &[f64], score: &[f64]) -> Ranking {
    let n = group.len().min(rel.len()).min(score.len());
    let key = |i: usize| canon(group[i]);
    let mut idx: Vec<usize> = (0..n).collect();
    idx.sort_by(|&a, &b| {
        key(a)
            .total_cmp(&key(b))
            .then(canon(score[b]).total_cmp(&canon(score[a])))
            .then(canon(rel[a]).total_cmp(&canon(rel[b])))
            .then(a.cmp(&b))
    });
    let (mut ndcg, mut mrr, mut queries) = (0.0, 0.0, 0usize);
    for query in idx.chunk_by(|&a, &b| key(a).total_cmp(&key(b)) == Ordering::Equal) {
        let ranked: Vec<f64> = query.iter().map(|&i| rel[i]).collect();
        let mut ideal = ranked.clone();
        ideal.sort_by(|a, b| canon(*b).total_cmp(&canon(*a)));
        let best = dcg_at(&ideal, 10);
        if best.partial_cmp(&0.0) != Some(Ordering::Greater) {
            continue;
        }
        ndcg += dcg_at(&ranked, 10) / best;
        mrr += ranked
            .iter()
            .position(|&r| r > 0.0)
            .map_or(0.0, |k| 1.0 / (k + 1) as f64);
        queries += 1;
    }
    Ranking {
        ndcg_at_10: ndcg / queries as f64,
        mrr: mrr / queries as f64,
        queries,
    }
}

/// How to compare two embeddings: it must match what the loss trained for
/// (a contrastive loss on normalised vectors wants [`Similarity::Cosine`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Similarity {
    /// Inner product, for losses that score pairs by a raw dot product.
    Dot,
    /// Cosine of the angle; a zero vector has cosine 0 with everything.
    Cosine,
    /// Negative Euclidean distance, for metric-learning (triplet) losses.
    Distance,
}

/// Retrieval scores of paired embeddings.
///
/// Recall@1 asks whether the true partner is retrieved first, recall@10
/// whether it is retrieved at all in a typical result page.
#[derive(Clone, Debug, PartialEq)]
pub struct Embedding {
    /// Fraction of queries whose partner ranks first; NaN without queries.
    pub recall_at_1: f64,
    /// Fraction of queries whose partner ranks in the top 10; NaN without queries.
    pub recall_at_10: f64,
    /// Number of queries evaluated.
    pub queries: usize,
}

/// Scores paired embeddings (two towers, image/text, ...) by retrieval.
///
/// Row i of `a` is a query whose true partner is row i of `b`. For each i
/// with `positive[i]` (or every i when `positive` is None; an i beyond the
/// mask, or without a row in `b`, is no query) all rows j of `b` are ranked
/// by similarity to `a[i]`. Ties are pessimistic: the true partner ranks
/// after every other row scoring the same, and after any row whose
/// similarity is NaN; a NaN similarity to the partner ranks it last.
/// recall@k = fraction of queries whose partner is in the top k; NaN when
/// there are no queries. [`Similarity::Distance`] ranks by squared
/// distance, the same order without the rounding of a square root. Rows
/// with different widths are compared on their common columns.
///
/// O(n² d) time, processed in blocks of queries so `b` is streamed from
/// memory a few hundred times rather than n times; fine for n up to ~20k.
pub fn embedding(
    a: ArrayView2<'_, f64>,
    b: ArrayView2<'_, f64>,
    positive: Option<&[bool]>,
    sim: Similarity,
) -> Embedding {
    let d = a.ncols().min(b.ncols());
    let m = b.nrows();
    let nq = a.nrows().min(m);
    let queries: Vec<usize> = (0..nq)
        .filter(|&i| positive.is_none_or(|mask| mask.get(i) == Some(&true)))
        .collect();
    let av = rows(a.slice(s![..nq, ..d]), sim);
    let bv = rows(b.slice(s![.., ..d]), sim);
    let a_row = |i: usize| &av[i * d..(i + 1) * d];
    let b_row = |j: usize| &bv[j * d..(j + 1) * d];
    let score = |x: &[f64], y: &[f64]| match sim {
        Similarity::Dot | Similarity::Cosine => dot(x, y),
        Similarity::Distance => -sq_dist(x, y),
    };
    let partner: Vec<f64> = queries.iter().map(|&i| score(a_row(i), b_row(i))).collect();
    // Rows ranked ahead of each partner, counted only up to 10 (all that
    // recall@10 needs), which lets a hopeless query stop early.
    let mut ahead = vec![0usize; queries.len()];
    const BLOCK: usize = 64;
    for ((qs, ps), hs) in queries
        .chunks(BLOCK)
        .zip(partner.chunks(BLOCK))
        .zip(ahead.chunks_mut(BLOCK))
    {
        for j in 0..m {
            let bj = b_row(j);
            for ((&i, &own), h) in qs.iter().zip(ps).zip(hs.iter_mut()) {
                // Not below the partner (equal, above or NaN): ranks ahead of it.
                if *h < 10
                    && i != j
                    && score(a_row(i), bj).partial_cmp(&own) != Some(Ordering::Less)
                {
                    *h += 1;
                }
            }
        }
    }
    let q = queries.len() as f64;
    Embedding {
        recall_at_1: ahead.iter().filter(|&&h| h < 1).count() as f64 / q,
        recall_at_10: ahead.iter().filter(|&&h| h < 10).count() as f64 / q,
        queries: queries.len(),
    }
}

/// The confusion counts of decisions p ≥ t.
struct Confusion {
    tp: usize,
    fp: usize,
    fn_: usize,
    tn: usize,
}

impl Confusion {
    fn at(y: &[bool], p: &[f64], t: f64) -> Confusion {
        let mut c = Confusion {
            tp: 0,
            fp: 0,
            fn_: 0,
            tn: 0,
        };
        for (&y, &p) in y.iter().zip(p) {
            match (y, p >= t) {
                (true, true) => c.tp += 1,
                (false, true) => c.fp += 1,
                (true, false) => c.fn_ += 1,
                (false, false) => c.tn += 1,
            }
        }
        c
    }

    /// Expected cost per example; NaN when there are no examples.
    fn cost(&self, c_fn: f64, c_fp: f64) -> f64 {
        let n = self.tp + self.fp + self.fn_ + self.tn;
        (c_fn * self.fn_ as f64 + c_fp * self.fp as f64) / n as f64
    }
}

/// The key by which values are ordered and ties detected: `-0.0` is `0.0`
/// and every NaN is the same (positive) NaN, which sorts above +∞.
fn canon(x: f64) -> f64 {
    if x.is_nan() {
        f64::NAN
    } else if x == 0.0 {
        0.0
    } else {
        x
    }
}

/// `num / den`, or 0 when `den` is 0 (scikit-learn's `zero_division=0`).
fn ratio(num: f64, den: f64) -> f64 {
    if den == 0.0 { 0.0 } else { num / den }
}

fn f1_of(tp: usize, fp: usize, fn_: usize) -> f64 {
    ratio(2.0 * tp as f64, (2 * tp + fp + fn_) as f64)
}

fn mean_or_zero(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, count) = values.fold((0.0, 0usize), |(s, c), v| (s + v, c + 1));
    if count == 0 { 0.0 } else { sum / count as f64 }
}

/// (positives, negatives) per distinct score, from the highest score down.
fn groups_desc(y: &[bool], p: &[f64]) -> Vec<(u64, u64)> {
    let mut v: Vec<(f64, bool)> = y.iter().zip(p).map(|(&y, &p)| (canon(p), y)).collect();
    v.sort_by(|a, b| b.0.total_cmp(&a.0));
    v.chunk_by(|a, b| a.0.total_cmp(&b.0) == Ordering::Equal)
        .map(|g| {
            let pos = g.iter().filter(|e| e.1).count() as u64;
            (pos, g.len() as u64 - pos)
        })
        .collect()
}

/// Mann–Whitney U / (P · N), computed exactly in integers (twice the count,
/// so a tie's ½ stays integral) before the one division.
fn roc_auc(groups: &[(u64, u64)]) -> f64 {
    let pos: u64 = groups.iter().map(|g| g.0).sum();
    let neg: u64 = groups.iter().map(|g| g.1).sum();
    if pos == 0 || neg == 0 {
        return f64::NAN;
    }
    let mut below = neg;
    let mut twice: u128 = 0;
    for &(p, n) in groups {
        below -= n;
        twice += u128::from(p) * u128::from(2 * below + n);
    }
    twice as f64 / (2.0 * pos as f64 * neg as f64)
}

fn pr_points(groups: &[(u64, u64)]) -> Vec<(f64, f64)> {
    let pos: u64 = groups.iter().map(|g| g.0).sum();
    let mut points = Vec::with_capacity(groups.len() + 1);
    points.push((0.0, 1.0));
    let (mut tp, mut fp) = (0u64, 0u64);
    for &(p, n) in groups {
        tp += p;
        fp += n;
        points.push((ratio(tp as f64, pos as f64), tp as f64 / (tp + fp) as f64));
    }
    points
}

fn average_precision(groups: &[(u64, u64)]) -> f64 {
    if groups.iter().all(|g| g.0 == 0) {
        return f64::NAN;
    }
    pr_points(groups)
        .windows(2)
        .map(|w| (w[1].0 - w[0].0) * w[1].1)
        .sum()
}

/// Non-empty bins of (prediction, outcome) pairs: (mean prediction,
/// fraction of outcomes true, count).
fn binned(pairs: impl Iterator<Item = (f64, bool)>, bins: usize) -> Vec<(f64, f64, usize)> {
    if bins == 0 {
        return Vec::new();
    }
    let mut acc = vec![(0.0, 0usize, 0usize); bins];
    for (p, y) in pairs {
        let k = (p * bins as f64).floor();
        // NaN and negatives fail `k >= 1.0` and land in bin 0.
        let k = if k >= 1.0 {
            (k as usize).min(bins - 1)
        } else {
            0
        };
        acc[k].0 += p;
        acc[k].1 += usize::from(y);
        acc[k].2 += 1;
    }
    acc.into_iter()
        .filter(|b| b.2 > 0)
        .map(|(sum, pos, count)| (sum / count as f64, pos as f64 / count as f64, count))
        .collect()
}

/// Σ_b (n_b / n) · |mean p_b − fraction positive_b|; NaN without examples.
fn ece(bins: &[(f64, f64, usize)]) -> f64 {
    let n: usize = bins.iter().map(|b| b.2).sum();
    if n == 0 {
        return f64::NAN;
    }
    bins.iter()
        .map(|&(p, y, count)| count as f64 / n as f64 * (p - y).abs())
        .sum()
}

/// DCG of the first `k` relevances in rank order: Σ (2^rel − 1) / log2(rank + 1).
fn dcg_at(rels: &[f64], k: usize) -> f64 {
    rels.iter()
        .take(k)
        .enumerate()
        .map(|(i, &r)| (r.exp2() - 1.0) / (i as f64 + 2.0).log2())
        .sum()
}

/// The rows of `x` contiguous in row-major order, unit-normalised for
/// cosine (a zero row stays zero, so its cosine with anything is 0).
fn rows(x: ArrayView2<'_, f64>, sim: Similarity) -> Vec<f64> {
    let mut v: Vec<f64> = x.iter().copied().collect();
    if sim == Similarity::Cosine && x.ncols() > 0 {
        for r in v.chunks_mut(x.ncols()) {
            let norm = dot(r, r).sqrt();
            if norm > 0.0 {
                r.iter_mut().for_each(|e| *e /= norm);
            }
        }
    }
    v
}

/// Dot product with four independent accumulators, so it vectorises; the
/// summation order is fixed, so equal rows score exactly equal.
fn dot(x: &[f64], y: &[f64]) -> f64 {
    let mut acc = [0.0; 4];
    let (mut xs, mut ys) = (x.chunks_exact(4), y.chunks_exact(4));
    for (u, v) in xs.by_ref().zip(ys.by_ref()) {
        for ((a, &u), &v) in acc.iter_mut().zip(u).zip(v) {
            *a += u * v;
        }
    }
    let mut sum = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    for (&u, &v) in xs.remainder().iter().zip(ys.remainder()) {
        sum += u * v;
    }
    sum
}

/// Squared Euclidean distance, accumulated like [`dot`].
fn sq_dist(x: &[f64], y: &[f64]) -> f64 {
    let mut acc = [0.0; 4];
    let (mut xs, mut ys) = (x.chunks_exact(4), y.chunks_exact(4));
    for (u, v) in xs.by_ref().zip(ys.by_ref()) {
        for ((a, &u), &v) in acc.iter_mut().zip(u).zip(v) {
            *a += (u - v) * (u - v);
        }
    }
    let mut sum = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    for (&u, &v) in xs.remainder().iter().zip(ys.remainder()) {
        sum += (u - v) * (u - v);
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array2, array};

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() <= 1e-12, "{a} != {b}");
    }

    #[test]
    fn sklearn_documented_example() {
        // y = [0,0,1,1], s = [0.1,0.4,0.35,0.8].
        // ROC-AUC: positive/negative pairs (0.35,0.1) ✓ (0.35,0.4) ✗
        // (0.8,0.1) ✓ (0.8,0.4) ✓ → 3/4.
        // AP: thresholds 0.8 → (R,P) = (½,1); 0.4 → (½,½); 0.35 → (1,⅔);
        // 0.1 → (1,½). AP = ½·1 + 0·½ + ½·⅔ + 0·½ = 5/6.
        let y = [false, false, true, true];
        let p = [0.1, 0.4, 0.35, 0.8];
        let m = binary(&y, &p, None);
        assert_eq!(m.roc_auc, 0.75);
        close(m.pr_auc, 5.0 / 6.0);
        let curve = pr_curve(&y, &p);
        assert_eq!(
            curve,
            vec![
                (0.0, 1.0),
                (0.5, 1.0),
                (0.5, 0.5),
                (1.0, 2.0 / 3.0),
                (1.0, 0.5)
            ]
        );
    }

    #[test]
    fn roc_auc_counts_ties_half() {
        // Positives {0.5, 0.9}, negatives {0.2, 0.5}:
        // (0.5,0.2)=1 (0.5,0.5)=½ (0.9,0.2)=1 (0.9,0.5)=1 → 3.5/4 = 0.875.
        let m = binary(&[false, true, false, true], &[0.2, 0.5, 0.5, 0.9], None);
        assert_eq!(m.roc_auc, 0.875);
        // A tied group is one threshold for AP: 0.9 → (½,1); 0.5 → (1,⅔);
        // 0.2 → (1,½). AP = ½ + ½·⅔ = 5/6.
        close(m.pr_auc, 5.0 / 6.0);
        // A constant scorer has AUC ½ exactly.
        let c = binary(&[false, true, true], &[0.3, 0.3, 0.3], None);
        assert_eq!(c.roc_auc, 0.5);
        // −0.0 and 0.0 are one score.
        let z = binary(&[false, true], &[-0.0, 0.0], None);
        assert_eq!(z.roc_auc, 0.5);
    }

    #[test]
    fn thresholded_scores_and_zero_division() {
        // Nothing reaches 0.5: TP = FP = 0, FN = 2, TN = 1.
        let m = binary(&[true, false, true], &[0.1, 0.2, 0.3], None);
        assert_eq!(m.precision, 0.0);
        assert_eq!(m.recall, 0.0);
        assert_eq!(m.f1, 0.0);
        assert_eq!(m.accuracy, 1.0 / 3.0);
        // p = [0.9,0.6,0.5,0.4] vs y = [1,0,1,1]: TP 2 (0.9, 0.5 ≥ 0.5),
        // FP 1, FN 1 → P = R = ⅔, F1 = 4/6, accuracy ½.
        let m = binary(&[true, false, true, true], &[0.9, 0.6, 0.5, 0.4], None);
        assert_eq!(m.precision, 2.0 / 3.0);
        assert_eq!(m.recall, 2.0 / 3.0);
        assert_eq!(m.f1, 4.0 / 6.0);
        assert_eq!(m.accuracy, 0.5);
    }

    #[test]
    fn degenerate_binary_inputs_do_not_panic() {
        let e = binary(&[], &[], Some((1.0, 1.0)));
        assert!(e.accuracy.is_nan() && e.roc_auc.is_nan() && e.pr_auc.is_nan());
        assert!(e.ece.is_nan() && e.cost_at_half.is_some_and(f64::is_nan));
        assert_eq!((e.precision, e.recall, e.f1), (0.0, 0.0, 0.0));
        assert_eq!(pr_curve(&[], &[]), vec![(0.0, 1.0)]);
        let one = binary(&[true, true], &[0.2, 0.8], None);
        assert!(one.roc_auc.is_nan());
        assert_eq!(one.pr_auc, 1.0);
        let none = binary(&[false, false], &[0.2, 0.8], None);
        assert!(none.roc_auc.is_nan() && none.pr_auc.is_nan());
        // Lengths disagree: the common prefix is scored.
        let cut = binary(&[true, false, true], &[0.9, 0.1], None);
        assert_eq!(cut.accuracy, 1.0);
        assert!(reliability(&[true], &[0.5], 0).is_empty());
    }

    #[test]
    fn cost_at_half_and_at_bayes_threshold() {
        // c_fn = 4, c_fp = 1 → t* = 1/5 = 0.2.
        // y = [1,1,0,0,1], p = [0.9,0.3,0.6,0.2,0.15].
        // At 0.5: predicted [1,0,1,0,0] → FN 2, FP 1 → (4·2 + 1·1)/5 = 1.8.
        // At 0.2: predicted [1,1,1,1,0] (0.2 ≥ 0.2) → FN 1, FP 2 → (4 + 2)/5 = 1.2.
        let y = [true, true, false, false, true];
        let p = [0.9, 0.3, 0.6, 0.2, 0.15];
        let m = binary(&y, &p, Some((4.0, 1.0)));
        assert_eq!(m.optimal_threshold, Some(0.2));
        close(m.cost_at_half.unwrap(), 1.8);
        close(m.cost_at_optimal.unwrap(), 1.2);
        let free = binary(&y, &p, Some((0.0, 0.0)));
        assert_eq!(free.optimal_threshold, Some(0.5));
        assert_eq!(free.cost_at_optimal, Some(0.0));
        assert_eq!(binary(&y, &p, None).cost_at_half, None);
    }

    #[test]
    fn ece_and_reliability() {
        // y = [1,0,1,1], p = [0.05,0.15,0.75,0.72]: bins 0, 1, 7, 7.
        // bin 0: |0.05 − 1| = 0.95, weight ¼; bin 1: |0.15 − 0| = 0.15, ¼;
        // bin 7: |0.735 − 1| = 0.265, ½.
        // ECE = 0.2375 + 0.0375 + 0.1325 = 0.4075.
        let y = [true, false, true, true];
        let p = [0.05, 0.15, 0.75, 0.72];
        close(binary(&y, &p, None).ece, 0.4075);
        let r = reliability(&y, &p, 10);
        assert_eq!(r.len(), 3);
        assert_eq!((r[0].1, r[0].2), (1.0, 1));
        close(r[2].0, 0.735);
        assert_eq!((r[2].1, r[2].2), (1.0, 2));
        // p = 1 goes into the last bin, together with 0.95, apart from 0.85.
        let top = reliability(&[true, false, true], &[1.0, 0.95, 0.85], 10);
        assert_eq!(top, vec![(0.85, 1.0, 1), (0.975, 0.5, 2)]);
        // Perfectly calibrated bins: 0.5 predicted, half positive → ECE 0.
        assert_eq!(binary(&[true, false], &[0.5, 0.5], None).ece, 0.0);
    }

    #[test]
    fn multiclass_scores() {
        // y = [0,2,1]; argmax = [0,2,0] (row 3 ties 0.4/0.4 → lowest index).
        // accuracy ⅔. F1: class 0 TP1 FP1 → ⅔; class 1 FN1 → 0; class 2 → 1;
        // macro = (⅔ + 0 + 1)/3 = 5/9.
        // log-loss = −(ln 0.7 + ln 0.8 + ln 0.4)/3 ≈ 0.4987030757.
        // top-label ECE: confidences 0.7 ✓, 0.8 ✓, 0.4 ✗ in bins 7, 8, 4:
        // (0.3 + 0.2 + 0.4)/3 = 0.3.
        let p = array![[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.4, 0.4, 0.2]];
        let m = multiclass(&[0, 2, 1], p.view());
        assert_eq!(m.accuracy, 2.0 / 3.0);
        close(m.macro_f1, 5.0 / 9.0);
        close(m.log_loss, -(0.7f64.ln() + 0.8f64.ln() + 0.4f64.ln()) / 3.0);
        close(m.log_loss, 0.498_703_075_709_032_44);
        close(m.ece, 0.3);
        // Zero probability on the truth is floored at 1e-15: ln(1e15).
        let z = multiclass(&[1], array![[1.0, 0.0]].view());
        close(z.log_loss, 15.0 * 10f64.ln());
        assert_eq!((z.accuracy, z.macro_f1), (0.0, 0.0));
        // Empty and column-less inputs.
        let e = multiclass(&[], Array2::<f64>::zeros((0, 3)).view());
        assert!(e.accuracy.is_nan() && e.log_loss.is_nan() && e.ece.is_nan());
        assert_eq!(e.macro_f1, 0.0);
        let c = multiclass(&[0], Array2::<f64>::zeros((1, 0)).view());
        assert_eq!((c.accuracy, c.macro_f1, c.ece), (0.0, 0.0, 0.0));
    }

    #[test]
    fn multilabel_softmax_like_input() {
        // One true label per row; softmax-like p. Predictions (p ≥ 0.5):
        // row 0 → {0}, row 1 → {1} (0.5 counts), row 2 → {}.
        // TP 2, FP 0, FN 1 → micro-F1 = 4/5.
        // Label F1: 0 → 1, 1 → 1, 2 → 0 (FN only); label 3 never set nor
        // predicted, so excluded → macro = 2/3.
        // Predicted labels per row: 2/3; true labels per row: 1.
        let y = array![
            [1.0, 0.0, 0.0, 0.0],
            [0.0, 1.0, 0.0, 0.0],
            [0.0, 0.0, 1.0, 0.0]
        ];
        let p = array![
            [0.6, 0.3, 0.05, 0.05],
            [0.2, 0.5, 0.2, 0.1],
            [0.4, 0.35, 0.2, 0.05]
        ];
        let m = multilabel(y.view(), p.view());
        close(m.micro_f1, 0.8);
        close(m.macro_f1, 2.0 / 3.0);
        close(m.labels_per_example, 2.0 / 3.0);
        assert_eq!(m.true_labels_per_example, 1.0);
        let e = multilabel(Array2::zeros((0, 2)).view(), Array2::zeros((0, 2)).view());
        assert_eq!((e.micro_f1, e.macro_f1), (0.0, 0.0));
        assert!(e.labels_per_example.is_nan());
    }

    #[test]
    fn regression_median_odd_and_even() {
        // Odd: errors 0, 2, 3 → median 2, MAE 5/3, RMSE √(13/3).
        let r = regression(&[1.0, 2.0, 3.0], &[1.0, 4.0, 0.0]);
        assert_eq!(r.median_ae, 2.0);
        close(r.mae, 5.0 / 3.0);
        close(r.rmse, (13.0f64 / 3.0).sqrt());
        assert_eq!(r.n, 3);
        // Even: errors 0, 2, 3, 1 → sorted 0,1,2,3 → median 1.5, MAE 1.5,
        // RMSE √(14/4).
        let r = regression(&[1.0, 2.0, 3.0, 4.0], &[1.0, 4.0, 0.0, 5.0]);
        assert_eq!(r.median_ae, 1.5);
        assert_eq!(r.mae, 1.5);
        assert_eq!(r.rmse, 3.5f64.sqrt());
        let e = regression(&[], &[]);
        assert!(e.rmse.is_nan() && e.mae.is_nan() && e.median_ae.is_nan());
        assert_eq!(e.n, 0);
    }

    #[test]
    fn ndcg_of_a_known_ranking() {
        // Ranked rels [3,2,3,0,1,2], gains 2^rel − 1 = [7,3,7,0,1,3]:
        // DCG  = 7/1 + 3/log2 3 + 7/2 + 0/log2 5 + 1/log2 6 + 3/log2 7
        //      ≈ 13.848263629272981
        // ideal [3,3,2,2,1,0]:
        // IDCG = 7/1 + 7/log2 3 + 3/2 + 3/log2 5 + 1/log2 6 + 0
        //      ≈ 14.595390756454924
        // NDCG ≈ 0.9488107485678985; MRR = 1 (first doc relevant).
        let rel = [3.0, 2.0, 3.0, 0.0, 1.0, 2.0];
        let score = [6.0, 5.0, 4.0, 3.0, 2.0, 1.0];
        let r = ranking(&[7.0; 6], &rel, &score);
        let dcg = 7.0 + 3.0 / 3f64.log2() + 3.5 + 1.0 / 6f64.log2() + 3.0 / 7f64.log2();
        let idcg = 7.0 + 7.0 / 3f64.log2() + 1.5 + 3.0 / 5f64.log2() + 1.0 / 6f64.log2();
        close(r.ndcg_at_10, dcg / idcg);
        close(r.ndcg_at_10, 0.948_810_748_567_898_5);
        assert_eq!((r.mrr, r.queries), (1.0, 1));
    }

    #[test]
    fn ranking_ties_are_pessimistic() {
        // Constant scores, rels [0,1,0]: ties put the relevant doc last,
        // rank 3 → DCG = 1/log2 4 = ½, IDCG = 1 → NDCG ½, MRR ⅓.
        let r = ranking(&[0.0; 3], &[0.0, 1.0, 0.0], &[0.5; 3]);
        assert_eq!(r.ndcg_at_10, 0.5);
        assert_eq!(r.mrr, 1.0 / 3.0);
    }

    #[test]
    fn mrr_over_interleaved_queries() {
        // Query 1 (rows 0,2,4): by score [0.9 rel 0, 0.5 rel 2, 0.1 rel 0]
        // → first relevant at rank 2 → ½.
        // Query 2 (rows 1,3): rel 1 ranked first → 1.
        // Query 3 (row 5): no relevant doc → skipped.
        // MRR = (½ + 1)/2 = ¾ over 2 queries. −0.0 and 0.0 are one query id.
        let group = [1.0, 0.0, 1.0, -0.0, 1.0, 3.0];
        let rel = [0.0, 1.0, 2.0, 0.0, 0.0, 0.0];
        let score = [0.9, 0.8, 0.5, 0.1, 0.1, 1.0];
        let r = ranking(&group, &rel, &score);
        assert_eq!(r.queries, 2);
        assert_eq!(r.mrr, 0.75);
        // NDCG: query 1 = (3/log2 3)/3, query 2 = 1.
        close(r.ndcg_at_10, (1.0 / 3f64.log2() + 1.0) / 2.0);
        // A relevant doc at rank 11 is beyond NDCG@10 but not beyond MRR.
        let mut rel = [0.0; 11];
        rel[10] = 1.0;
        let score: Vec<f64> = (0..11).map(|i| -f64::from(i)).collect();
        let r = ranking(&[0.0; 11], &rel, &score);
        assert_eq!(r.ndcg_at_10, 0.0);
        assert_eq!(r.mrr, 1.0 / 11.0);
        let none = ranking(&[0.0], &[0.0], &[1.0]);
        assert!(none.ndcg_at_10.is_nan() && none.mrr.is_nan());
        assert_eq!(none.queries, 0);
    }

    fn points() -> Array2<f64> {
        // 12 rows (cos 0.25i, sin 0.25i, 0, 0, 1): distinct points on an arc
        // of 2.75 rad < π lifted off the origin, hence distinct directions
        // too; width 5 exercises the remainder past the 4-wide chunks.
        Array2::from_shape_fn((12, 5), |(i, j)| {
            let t = 0.25 * i as f64;
            [t.cos(), t.sin(), 0.0, 0.0, 1.0][j]
        })
    }

    #[test]
    fn embedding_identity_and_swap() {
        let a = points();
        for sim in [Similarity::Cosine, Similarity::Distance] {
            let e = embedding(a.view(), a.view(), None, sim);
            assert_eq!((e.recall_at_1, e.recall_at_10, e.queries), (1.0, 1.0, 12));
        }
        // Dot needs orthonormal rows for the identity map to be perfect.
        let i4 = Array2::<f64>::eye(4);
        let e = embedding(i4.view(), i4.view(), None, Similarity::Dot);
        assert_eq!(e.recall_at_1, 1.0);
        // Swap partners of rows 0 and 1: queries 0 and 1 find each other's
        // partner at distance 0 first; their own partner is one arc step
        // away, as close as any other row (rank 2, or 3 on a tie with the
        // row on the other side) → recall@1 = 10/12, recall@10 = 1.
        let mut b = a.clone();
        for j in 0..5 {
            b.swap([0, j], [1, j]);
        }
        let e = embedding(a.view(), b.view(), None, Similarity::Distance);
        assert_eq!(e.recall_at_1, 10.0 / 12.0);
        assert_eq!(e.recall_at_10, 1.0);
        // Only the masked queries count: {0, 2} → one hit of two.
        let mask = [true, false, true];
        let e = embedding(a.view(), b.view(), Some(&mask), Similarity::Distance);
        assert_eq!((e.recall_at_1, e.queries), (0.5, 2));
    }

    #[test]
    fn embedding_ties_are_pessimistic() {
        // All scores equal: each partner ranks after the 11 others.
        let z = Array2::<f64>::zeros((12, 3));
        for sim in [Similarity::Dot, Similarity::Cosine, Similarity::Distance] {
            let e = embedding(z.view(), z.view(), None, sim);
            assert_eq!((e.recall_at_1, e.recall_at_10), (0.0, 0.0));
        }
        // Three rows: the partner at rank 3 is within the top 10.
        let z = Array2::<f64>::zeros((3, 2));
        let e = embedding(z.view(), z.view(), None, Similarity::Dot);
        assert_eq!((e.recall_at_1, e.recall_at_10), (0.0, 1.0));
        let e = embedding(z.view(), z.view(), Some(&[]), Similarity::Dot);
        assert!(e.recall_at_1.is_nan());
        assert_eq!(e.queries, 0);
    }
}
