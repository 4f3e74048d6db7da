//! lossc's compiled evaluator against hand-written fused loops, in the same
//! run: value and gradient, one pass, the loop an expert writes for that
//! one loss (branch-free, the same inlined `exp`/`log` as lossc, compiled
//! for AVX2+FMA and for AVX-512 like lossc, accumulators that vectorise).
//! Where an expert has more than one good way to write it (softmax
//! cross-entropy a row at a time or on transposed blocks of rows; InfoNCE
//! as one sweep over the keys or as three matrix products), each is written
//! and the fastest of them and of the two tiers on this machine is the
//! baseline.
//!
//! `cargo bench --bench eval` prints criterion's timings and, at the end, a
//! table of ratios (lossc / hand-written on one thread; lossc on one thread
//! / lossc on all threads; and for the per-row losses the hand loop's own
//! speed-up on all threads, split into contiguous parts of the batch: what
//! the machine's memory lets any loop gain), the bytes lossc allocates
//! beyond inputs and outputs, and the time to compile each example. `LOSSC_BENCH_QUICK=1`
//! shrinks the sizes tenfold; `LOSSC_BENCH_TABLE=1` prints the table
//! without criterion's own measurements; `LOSSC_BENCH_CASES=huber,cce`
//! measures only the cases whose names contain one of the words;
//! `LOSSC_BENCH_ISA=avx2` (or `baseline`) caps the tier lossc and the hand
//! loops run on, as on a machine without the wider ones.

use criterion::{Criterion, criterion_group, criterion_main};
use lossc::exec::Isa;
use lossc::exec::math::{self, Float};
use lossc::{Evaluator, Inputs, Loss, Output};
use ndarray::linalg::general_mat_mul;
use ndarray::{Array1, Array2, ArrayD, ArrayView2, ArrayViewMut2, LinalgScalar, s};
use rayon::prelude::*;
use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

#[path = "../tests/kernels/mod.rs"]
mod kernels;

/// Counts the bytes live and the peak, to report what an evaluation
/// allocates.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let now = LIVE.fetch_add(l.size(), Ordering::Relaxed) + l.size();
        PEAK.fetch_max(now, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn quick() -> bool {
    std::env::var_os("LOSSC_BENCH_QUICK").is_some()
}

/// The tier the hand loops run on (`Isa as u8`): each case picks the faster
/// of AVX2 and AVX-512 for its hand loop before timing it (see
/// [`best_hand_tier`]), so that lossc is compared with the loop at its best.
static HAND_ISA: AtomicU8 = AtomicU8::new(Isa::Baseline as u8);

fn hand_isa() -> Isa {
    Isa::ALL[HAND_ISA.load(Ordering::Relaxed) as usize]
}

fn set_hand_isa(t: Isa) {
    assert!(
        Isa::available().contains(&t),
        "this CPU has no {}",
        t.name()
    );
    HAND_ISA.store(t as u8, Ordering::Relaxed);
}

/// Stamps out a hand-written loop for the baseline target, for AVX2+FMA
/// and for AVX-512, the tier chosen at run time (as lossc does).
macro_rules! dispatch {
    ($name:ident, $body:ident, ($($arg:ident : $ty:ty),*)) => {
        fn $name<T: Float>($($arg: $ty),*) -> f64 {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
                unsafe fn wide512<T: Float>($($arg: $ty),*) -> f64 {
                    $body::<T, true>($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn wide<T: Float>($($arg: $ty),*) -> f64 {
                    $body::<T, true>($($arg),*)
                }
                match hand_isa() {
                    // SAFETY: `set_hand_isa` checked that the CPU has it.
                    Isa::Avx512 => return unsafe { wide512::<T>($($arg),*) },
                    // SAFETY: as above.
                    Isa::Avx2 => return unsafe { wide::<T>($($arg),*) },
                    Isa::Baseline => {}
                }
            }
            $body::<T, false>($($arg),*)
        }
    };
}

/// Rows per block of the hand loops: the per-row losses go to a stack
/// buffer and are summed after, so the row loop has no loop-carried float
/// dependency and vectorises.
const B: usize = 256;

#[inline(always)]
fn sum_block<T: Float>(v: &[T]) -> f64 {
    let mut lanes = [T::ZERO; 8];
    let mut it = v.chunks_exact(8);
    for c in &mut it {
        for k in 0..8 {
            lanes[k] = lanes[k] + c[k];
        }
    }
    lanes.iter().map(|x| x.f64()).sum::<f64>() + it.remainder().iter().map(|x| x.f64()).sum::<f64>()
}

// The per-row loops below take the batch's row count `n`: over a range of
// rows they return that range's share of the mean, so the same loop also
// runs on parts of the batch in parallel (the machine's ceiling for the
// speed-up of lossc on all threads). They walk their rows with zipped
// iterators, not indices: indexed, each row kept bounds checks and LLVM
// vectorised the loops poorly (on a Zen 5 with AVX-512, `focal_logits` f32
// ran 2.0x and `xray_triage` 1.7-1.8x as long as the same loop zipped).

/// Focal loss on logits, gamma = 2, alpha = 0.25: one `exp`, one `log1p`.
#[inline(always)]
fn focal_body<T: Float, const F: bool>(y: &[T], z: &[T], g: &mut [T], n: usize) -> f64 {
    let inv_n = T::of(1.0 / n as f64);
    let (alpha, one) = (T::of(0.25), T::ONE);
    let mut total = 0.0;
    let mut buf = [T::ZERO; B];
    for ((yb, zb), gb) in y.chunks(B).zip(z.chunks(B)).zip(g.chunks_mut(B)) {
        let m = yb.len();
        for (((&yi, &zi), gi), bi) in yb.iter().zip(zb).zip(gb.iter_mut()).zip(&mut buf[..m]) {
            let e = (-zi.abs()).exp::<F>();
            let d = one / (one + e);
            let p = math::sel(zi >= T::ZERO, d, e * d);
            let sp = zi.max(T::ZERO) + math::log1p::<T, F>(e); // -log(1 - p)
            let (log_p, log_q) = (zi - sp, -sp);
            let q = one - p;
            let pos = yi == one;
            let l1 = -alpha * q * q * log_p;
            let l0 = -(one - alpha) * p * p * log_q;
            let g1 = alpha * q * q * (T::of(2.0) * p * log_p - q);
            let g0 = (one - alpha) * p * p * (p - T::of(2.0) * q * log_q);
            *bi = math::sel(pos, l1, l0);
            *gi = math::sel(pos, g1, g0) * inv_n;
        }
        total += sum_block(&buf[..m]);
    }
    total / n as f64
}
dispatch!(focal_hand, focal_body, (y: &[T], z: &[T], g: &mut [T], n: usize));

/// Severity-weighted BCE on probabilities (xray_triage): one `log`, one
/// division.
#[inline(always)]
fn xray_body<T: Float, const F: bool>(y: &[T], s: &[T], p: &[T], g: &mut [T], n: usize) -> f64 {
    let inv_n = T::of(1.0 / n as f64);
    let one = T::ONE;
    let mut total = 0.0;
    let mut buf = [T::ZERO; B];
    for (((yb, sb), pb), gb) in y
        .chunks(B)
        .zip(s.chunks(B))
        .zip(p.chunks(B))
        .zip(g.chunks_mut(B))
    {
        let m = yb.len();
        let rows = yb.iter().zip(sb).zip(pb).zip(gb.iter_mut());
        for ((((&yi, &si), &pi), gi), bi) in rows.zip(&mut buf[..m]) {
            let pos = yi == one;
            let w = math::sel(pos, T::of(20.0) * (one + T::of(0.1) * si), one);
            let pt = math::sel(pos, pi, one - pi);
            *bi = -w * pt.ln::<F>();
            *gi = math::sel(pos, -w, w) / pt * inv_n;
        }
        total += sum_block(&buf[..m]);
    }
    total / n as f64
}
dispatch!(xray_hand, xray_body, (y: &[T], s: &[T], p: &[T], g: &mut [T], n: usize));

/// Huber with delta = 1.
#[inline(always)]
fn huber_body<T: Float, const F: bool>(y: &[T], yhat: &[T], g: &mut [T], n: usize) -> f64 {
    let inv_n = T::of(1.0 / n as f64);
    let (half, delta) = (T::of(0.5), T::ONE);
    let mut total = 0.0;
    let mut buf = [T::ZERO; B];
    for ((yb, hb), gb) in y.chunks(B).zip(yhat.chunks(B)).zip(g.chunks_mut(B)) {
        let m = yb.len();
        for (((&yi, &hi), gi), bi) in yb.iter().zip(hb).zip(gb.iter_mut()).zip(&mut buf[..m]) {
            let r = hi - yi;
            let a = r.abs();
            let small = a <= delta;
            *bi = math::sel(small, half * r * r, delta * (a - half * delta));
            *gi = math::sel(small, r, delta.copysign(r)) * inv_n;
        }
        total += sum_block(&buf[..m]);
    }
    total / n as f64
}
dispatch!(huber_hand, huber_body, (y: &[T], yhat: &[T], g: &mut [T], n: usize));

/// Categorical cross-entropy on logits: a max pass, then one `exp` per
/// logit kept in the gradient row and rescaled.
#[inline(always)]
fn cce_body<T: Float, const F: bool>(y: &[T], z: &[T], c: usize, g: &mut [T], n: usize) -> f64 {
    let inv_n = T::of(1.0 / n as f64);
    let mut total = 0.0;
    for ((&yi, zr), gr) in y.iter().zip(z.chunks_exact(c)).zip(g.chunks_exact_mut(c)) {
        let mut m = [T::of(f64::NEG_INFINITY); 8];
        let mut it = zr.chunks_exact(8);
        for ch in &mut it {
            for k in 0..8 {
                m[k] = m[k].max(ch[k]);
            }
        }
        let mut mx = m.iter().fold(T::of(f64::NEG_INFINITY), |a, &b| a.max(b));
        for &x in it.remainder() {
            mx = mx.max(x);
        }
        for (gi, &zi) in gr.iter_mut().zip(zr) {
            *gi = (zi - mx).exp::<F>();
        }
        let s = sum_block(gr);
        let lse = mx.f64() + s.ln();
        let label = yi.f64() as usize;
        total += lse - zr[label].f64();
        let scale = T::of(1.0 / s) * inv_n;
        for gi in gr.iter_mut() {
            *gi = *gi * scale;
        }
        gr[label] = gr[label] - inv_n;
    }
    total / n as f64
}
dispatch!(cce_hand, cce_body, (y: &[T], z: &[T], c: usize, g: &mut [T], n: usize));

/// Categorical cross-entropy for few classes, as an expert writes it when a
/// row is shorter than a vector register: a block of rows transposed so
/// that each class's logits lie contiguous across the rows, and the max,
/// the exps, their sums and the logarithms vectorise across rows, not
/// along a row of ten.
#[inline(always)]
fn cce_cols_body<T: Float, const F: bool>(
    y: &[T],
    z: &[T],
    c: usize,
    g: &mut [T],
    n: usize,
) -> f64 {
    const R: usize = 64;
    let inv_n = T::of(1.0 / n as f64);
    let mut t = vec![T::ZERO; c * R];
    let (mut mx, mut s, mut lse) = ([T::ZERO; R], [T::ZERO; R], [T::ZERO; R]);
    let mut total = 0.0;
    for ((yb, zb), gb) in y.chunks(R).zip(z.chunks(R * c)).zip(g.chunks_mut(R * c)) {
        let m = yb.len();
        for (r, zr) in zb.chunks_exact(c).enumerate() {
            for (j, &v) in zr.iter().enumerate() {
                t[j * R + r] = v;
            }
        }
        // (a short last block computes on the rows of the one before, unused)
        mx.copy_from_slice(&t[..R]);
        for tj in t.chunks_exact(R).skip(1) {
            for (a, &v) in mx.iter_mut().zip(tj) {
                *a = a.max(v);
            }
        }
        s.fill(T::ZERO);
        for tj in t.chunks_exact_mut(R) {
            for ((v, a), &m) in tj.iter_mut().zip(s.iter_mut()).zip(&mx) {
                let e = (*v - m).exp::<F>();
                *v = e;
                *a = *a + e;
            }
        }
        for ((l, a), &m) in lse.iter_mut().zip(s.iter_mut()).zip(&mx) {
            *l = m + a.ln::<F>();
            *a = inv_n / *a;
        }
        total += sum_block(&lse[..m]);
        for (r, (gr, &yr)) in gb.chunks_exact_mut(c).zip(yb).enumerate() {
            let label = yr.f64() as usize;
            total -= zb[r * c + label].f64();
            for (j, gj) in gr.iter_mut().enumerate() {
                *gj = t[j * R + r] * s[r];
            }
            gr[label] = gr[label] - inv_n;
        }
    }
    total / n as f64
}
dispatch!(cce_cols_hand, cce_cols_body, (y: &[T], z: &[T], c: usize, g: &mut [T], n: usize));

/// The row softmax of a block of InfoNCE's similarities (already divided
/// by the temperature) in place: each row then holds p_ij / (n t). Returns
/// the block's share of n times the loss; `i0` is the block's first query,
/// whose own key's similarity sits on the block's diagonal.
#[inline(always)]
fn softmax_rows_body<T: Float, const F: bool>(sim: &mut [T], n: usize, i0: usize, scale: T) -> f64 {
    let mut total = 0.0;
    for (ii, row) in sim.chunks_exact_mut(n).enumerate() {
        let own = row[i0 + ii];
        let mx = row.iter().fold(T::of(f64::NEG_INFINITY), |a, &b| a.max(b));
        for s in row.iter_mut() {
            *s = (*s - mx).exp::<F>();
        }
        let z = sum_block(row);
        total += mx.f64() + z.ln() - own.f64();
        let w = T::of(1.0 / z) * scale;
        for s in row.iter_mut() {
            *s = *s * w;
        }
    }
    total
}
dispatch!(softmax_rows_hand, softmax_rows_body, (sim: &mut [T], n: usize, i0: usize, scale: T));

/// InfoNCE as an expert with a matrix-product library writes it: per block
/// of queries, S = Q Kᵀ / t, its row softmax, then dQ = P K and dK += Pᵀ Q,
/// the three products by `matrixmultiply` (ndarray's `general_mat_mul`:
/// packed, cache-blocked, register-tiled kernels chosen at run time, its
/// AVX-512 ones included: the dev-dependency turns on their feature).
/// O(block x n) memory.
fn infonce_gemm<T: Float + LinalgScalar>(
    q: &[T],
    k: &[T],
    d: usize,
    gq: &mut [T],
    gk: &mut [T],
) -> f64 {
    const IB: usize = 256;
    let n = q.len() / d;
    let inv_t = T::of(10.0);
    let scale = inv_t * T::of(1.0 / n as f64);
    let kv = ArrayView2::from_shape((n, d), k).unwrap();
    let mut gkv = ArrayViewMut2::from_shape((n, d), &mut *gk).unwrap();
    gkv.fill(T::ZERO);
    let mut sim = Array2::<T>::zeros((IB.min(n), n));
    let mut total = 0.0;
    for i0 in (0..n).step_by(IB) {
        let ib = IB.min(n - i0);
        let qb = ArrayView2::from_shape((ib, d), &q[i0 * d..(i0 + ib) * d]).unwrap();
        let mut s = sim.slice_mut(s![..ib, ..]);
        general_mat_mul(inv_t, &qb, &kv.t(), T::ZERO, &mut s);
        total += softmax_rows_hand::<T>(s.as_slice_mut().unwrap(), n, i0, scale);
        let mut gqb = ArrayViewMut2::from_shape((ib, d), &mut gq[i0 * d..(i0 + ib) * d]).unwrap();
        general_mat_mul(T::ONE, &s, &kv, T::ZERO, &mut gqb);
        general_mat_mul(T::ONE, &s.t(), &qb, T::ONE, &mut gkv);
    }
    // The own pair's term: -dot(q_i, k_i) / (n t).
    for ((gqi, gki), (&qi, &ki)) in gq.iter_mut().zip(gk.iter_mut()).zip(q.iter().zip(k)) {
        *gqi = *gqi - ki * scale;
        *gki = *gki - qi * scale;
    }
    total / n as f64
}

/// InfoNCE with temperature 0.1, as an expert writes it for speed: four
/// queries at a time, so that each key row read serves four of them (the
/// keys of n = 4096 outgrow the L2 cache, and a row at a time streams them
/// three times per query), with 4 x 16 independent accumulator lanes in
/// the dot products (a single chain of multiply-adds waits on its latency).
/// Per block of queries: the similarities to every key (a 4 x n buffer),
/// their logsumexp, then dq by gathering keys and dk by scattering queries
/// in one sweep over the keys: 3 n²D multiply-adds, O(n) memory.
#[inline(always)]
fn infonce_body<T: Float, const F: bool>(
    q: &[T],
    k: &[T],
    d: usize,
    gq: &mut [T],
    gk: &mut [T],
) -> f64 {
    const IB: usize = 4;
    const L: usize = 16;
    let n = q.len() / d;
    let inv_t = T::of(10.0);
    let scale = inv_t * T::of(1.0 / n as f64);
    gk.fill(T::ZERO);
    let mut sim = vec![T::ZERO; IB * n];
    let mut total = 0.0;
    let full = d / L * L;
    let mut i0 = 0;
    while i0 < n {
        let ib = IB.min(n - i0);
        // A short last block repeats its last query (branch-free), unused.
        let qrow = |ii: usize| &q[(i0 + ii.min(ib - 1)) * d..][..d];
        for j in 0..n {
            let kj = &k[j * d..(j + 1) * d];
            let mut acc = [[T::ZERO; L]; IB];
            for c in (0..full).step_by(L) {
                let kc = &kj[c..c + L];
                for (ii, a) in acc.iter_mut().enumerate() {
                    let qc = &qrow(ii)[c..c + L];
                    for l in 0..L {
                        a[l] = T::madd::<F>(qc[l], kc[l], a[l]);
                    }
                }
            }
            for (ii, a) in acc.iter().enumerate().take(ib) {
                let mut s = a.iter().fold(T::ZERO, |x, &y| x + y);
                let qi = qrow(ii);
                for c in full..d {
                    s = T::madd::<F>(qi[c], kj[c], s);
                }
                sim[ii * n + j] = s * inv_t;
            }
        }
        // Softmax of each query's row; the row then holds p_ij / (n t).
        for ii in 0..ib {
            let row = &mut sim[ii * n..(ii + 1) * n];
            let mx = row.iter().fold(T::of(f64::NEG_INFINITY), |a, &b| a.max(b));
            for s in row.iter_mut() {
                *s = (*s - mx).exp::<F>();
            }
            let z = sum_block(row);
            let i = i0 + ii;
            let own = (0..d).fold(T::ZERO, |a, c| T::madd::<F>(q[i * d + c], k[i * d + c], a));
            total += mx.f64() + z.ln() - (own * inv_t).f64();
            let w = T::of(1.0 / z) * scale;
            for s in row.iter_mut() {
                *s = *s * w;
            }
            for c in 0..d {
                gq[i * d + c] = -k[i * d + c] * scale;
            }
        }
        // dq_i += p_ij k_j and dk_j += p_ij q_i, one sweep over the keys.
        let gqb = &mut gq[i0 * d..(i0 + ib) * d];
        for j in 0..n {
            let kj = &k[j * d..(j + 1) * d];
            let gkj = &mut gk[j * d..(j + 1) * d];
            for ii in 0..ib {
                let p = sim[ii * n + j];
                let qi = &q[(i0 + ii) * d..][..d];
                let gqi = &mut gqb[ii * d..(ii + 1) * d];
                for ((gqc, gkc), (&kc, &qc)) in
                    gqi.iter_mut().zip(gkj.iter_mut()).zip(kj.iter().zip(qi))
                {
                    *gqc = T::madd::<F>(p, kc, *gqc);
                    *gkc = T::madd::<F>(p, qc, *gkc);
                }
            }
        }
        for ii in 0..ib {
            let i = i0 + ii;
            for c in 0..d {
                gk[i * d + c] = gk[i * d + c] - q[i * d + c] * scale;
            }
        }
        i0 += ib;
    }
    total / n as f64
}
dispatch!(infonce_hand, infonce_body, (q: &[T], k: &[T], d: usize, gq: &mut [T], gk: &mut [T]));

/// A deterministic generator for the data (the same as lossc's tests).
fn rng(seed: u64) -> lossc::grad::Rng {
    lossc::grad::Rng::new(seed)
}

/// A hand-written loop over a whole batch: inputs, gradient outputs, the
/// loss.
type HandLoop<T> = Box<dyn Fn(&[ArrayD<T>], &mut [ArrayD<T>]) -> f64>;

/// A hand-written loop over a range of rows: each input's and gradient's
/// rows in that range (row-major), the batch's row count, and that range's
/// share of the loss.
type RowLoop<T> = Box<dyn Fn(&[&[T]], &mut [&mut [T]], usize) -> f64 + Sync>;

/// A benchmark's hand-written loop: per row (so it also runs in parallel,
/// on parts of the batch), or over the whole batch at once (InfoNCE, whose
/// rows all meet).
enum Hand<T> {
    Rows(RowLoop<T>),
    Whole(HandLoop<T>),
}

impl<T: Float> Hand<T> {
    /// The loss, on `threads` threads of rayon's global pool; `None` for a
    /// whole-batch loop on more than one.
    fn run(&self, arrays: &[ArrayD<T>], grads: &mut [ArrayD<T>], threads: usize) -> Option<f64> {
        let f = match self {
            Hand::Whole(f) => return (threads == 1).then(|| f(arrays, grads)),
            Hand::Rows(f) => f,
        };
        let n = arrays[0].shape()[0];
        // Every input and gradient has one entry (or row) per row of the batch.
        for a in arrays.iter().chain(grads.iter()) {
            assert_eq!(
                a.shape()[0],
                n,
                "a per-row hand loop reads only per-row arrays"
            );
        }
        if n == 0 {
            return Some(0.0);
        }
        let ins: Vec<&[T]> = arrays.iter().map(|a| a.as_slice().unwrap()).collect();
        let mut outs: Vec<&mut [T]> = grads
            .iter_mut()
            .map(|g| g.as_slice_mut().unwrap())
            .collect();
        if threads == 1 {
            return Some(f(&ins, &mut outs, n));
        }
        // Contiguous parts of `per` rows, one per thread.
        let per = n.div_ceil(threads);
        let part = |t: usize| (t * per).min(n)..((t + 1) * per).min(n);
        let ins: Vec<Vec<&[T]>> = (0..threads)
            .map(|t| {
                let r = part(t);
                ins.iter()
                    .map(|a| {
                        let w = a.len() / n;
                        &a[r.start * w..r.end * w]
                    })
                    .collect()
            })
            .collect();
        let mut parts: Vec<Vec<&mut [T]>> = (0..threads).map(|_| Vec::new()).collect();
        for g in outs {
            let w = g.len() / n;
            let mut rest = g;
            for (t, p) in parts.iter_mut().enumerate() {
                let (head, tail) = rest.split_at_mut(part(t).len() * w);
                p.push(head);
                rest = tail;
            }
        }
        Some(
            ins.par_iter()
                .zip(parts.par_iter_mut())
                .map(|(i, o)| f(i, o, n))
                .sum(),
        )
    }
}

/// An InfoNCE hand loop: `(q, k, d, dq, dk)` to the loss.
type InfonceLoop<T> = fn(&[T], &[T], usize, &mut [T], &mut [T]) -> f64;

/// An InfoNCE hand loop over the whole batch.
fn infonce_case<T: Float>(f: InfonceLoop<T>, d: usize) -> Hand<T> {
    Hand::Whole(Box::new(move |a, g| {
        let (gq, gk) = g.split_at_mut(1);
        f(
            a[0].as_slice().unwrap(),
            a[1].as_slice().unwrap(),
            d,
            gq[0].as_slice_mut().unwrap(),
            gk[0].as_slice_mut().unwrap(),
        )
    }))
}

/// One benchmark case: its inputs in `T` and its hand loops, named (the
/// faster on this machine is the baseline).
struct Case<T> {
    name: String,
    spec: &'static str,
    arrays: Vec<(&'static str, ArrayD<T>)>,
    grads: Vec<ArrayD<T>>,
    hands: Vec<(&'static str, Hand<T>)>,
}

fn col<T: Float>(v: impl Iterator<Item = f64>) -> ArrayD<T> {
    Array1::from_iter(v.map(T::of)).into_dyn()
}

fn cases<T: Float + LinalgScalar>() -> Vec<Case<T>> {
    let scale = if quick() { 10 } else { 1 };
    let big = 10_000_000 / scale;
    let mut r = rng(1);
    let mut out = Vec::new();
    let labels = |n: usize, r: &mut lossc::grad::Rng| {
        col::<T>(
            (0..n)
                .map(|_| (r.next_u64() % 2) as f64)
                .collect::<Vec<_>>()
                .into_iter(),
        )
    };
    // focal_logits
    {
        let y = labels(big, &mut r);
        let z = col::<T>(
            (0..big)
                .map(|_| 3.0 * r.normal())
                .collect::<Vec<_>>()
                .into_iter(),
        );
        out.push(Case {
            name: format!("focal_logits n={big}"),
            spec: "focal_logits",
            grads: vec![ArrayD::from_elem(z.raw_dim(), T::ZERO)],
            arrays: vec![("y", y), ("z", z)],
            hands: vec![(
                "rows",
                Hand::Rows(Box::new(|a, g, n| focal_hand::<T>(a[0], a[1], g[0], n))),
            )],
        });
    }
    // xray_triage
    {
        let y = labels(big, &mut r);
        let s = col::<T>(
            (0..big)
                .map(|_| 1.0 + 9.0 * r.uniform())
                .collect::<Vec<_>>()
                .into_iter(),
        );
        let p = col::<T>(
            (0..big)
                .map(|_| 0.02 + 0.96 * r.uniform())
                .collect::<Vec<_>>()
                .into_iter(),
        );
        out.push(Case {
            name: format!("xray_triage n={big}"),
            spec: "xray_triage",
            grads: vec![ArrayD::from_elem(p.raw_dim(), T::ZERO)],
            arrays: vec![("y", y), ("s", s), ("p", p)],
            hands: vec![(
                "rows",
                Hand::Rows(Box::new(|a, g, n| {
                    xray_hand::<T>(a[0], a[1], a[2], g[0], n)
                })),
            )],
        });
    }
    // huber
    {
        let y = col::<T>(
            (0..big)
                .map(|_| 2.0 * r.normal())
                .collect::<Vec<_>>()
                .into_iter(),
        );
        let h = col::<T>(
            (0..big)
                .map(|_| 2.0 * r.normal())
                .collect::<Vec<_>>()
                .into_iter(),
        );
        out.push(Case {
            name: format!("huber n={big}"),
            spec: "huber",
            grads: vec![ArrayD::from_elem(h.raw_dim(), T::ZERO)],
            arrays: vec![("y", y), ("yhat", h)],
            hands: vec![(
                "rows",
                Hand::Rows(Box::new(|a, g, n| huber_hand::<T>(a[0], a[1], g[0], n))),
            )],
        });
    }
    // cce_logits, C = 10 and C = 1000
    for (c, n) in [(10usize, 1_000_000 / scale), (1000, 100_000 / scale)] {
        let y = col::<T>(
            (0..n)
                .map(|_| (r.next_u64() % c as u64) as f64)
                .collect::<Vec<_>>()
                .into_iter(),
        );
        let z = Array2::from_shape_fn((n, c), |_| T::of(2.0 * r.normal())).into_dyn();
        out.push(Case {
            name: format!("cce_logits C={c} n={n}"),
            spec: "cce_logits",
            grads: vec![ArrayD::from_elem(z.raw_dim(), T::ZERO)],
            arrays: vec![("y", y), ("z", z)],
            hands: vec![
                (
                    "rows",
                    Hand::Rows(Box::new(move |a, g, n| {
                        cce_hand::<T>(a[0], a[1], c, g[0], n)
                    })),
                ),
                (
                    "columns",
                    Hand::Rows(Box::new(move |a, g, n| {
                        cce_cols_hand::<T>(a[0], a[1], c, g[0], n)
                    })),
                ),
            ],
        });
    }
    // infonce, n = 4096, D = 128
    {
        let (n, d) = (if quick() { 1024 } else { 4096 }, 128);
        let unit = |r: &mut lossc::grad::Rng| {
            let mut a = Array2::from_shape_fn((n, d), |_| r.normal());
            for mut row in a.rows_mut() {
                let norm = row.dot(&row).sqrt();
                row.mapv_inplace(|x| x / norm);
            }
            a.mapv(T::of).into_dyn()
        };
        let q = unit(&mut r);
        let k = unit(&mut r);
        out.push(Case {
            name: format!("infonce n={n} D={d}"),
            spec: "infonce",
            grads: vec![
                ArrayD::from_elem(q.raw_dim(), T::ZERO),
                ArrayD::from_elem(k.raw_dim(), T::ZERO),
            ],
            arrays: vec![("q", q), ("k", k)],
            hands: vec![
                ("sweep", infonce_case(infonce_hand::<T>, d)),
                ("gemm", infonce_case(infonce_gemm::<T>, d)),
            ],
        });
    }
    out
}

/// Median of `reps` timings of `f`, in seconds.
fn time(reps: usize, mut f: impl FnMut()) -> f64 {
    median(
        (0..reps)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64()
            })
            .collect(),
    )
}

/// `reps` rounds, each timing every function once in turn: on a shared
/// machine a slow spell then falls on all of them alike, where timing one
/// function's repetitions and then the next's lets it fall on one alone
/// and skew the ratio. Returns each function's times, round by round.
fn time_rounds<const K: usize>(reps: usize, mut fs: [&mut dyn FnMut(); K]) -> [Vec<f64>; K] {
    let mut v: [Vec<f64>; K] = std::array::from_fn(|_| Vec::with_capacity(reps));
    for _ in 0..reps {
        for (f, t) in fs.iter_mut().zip(v.iter_mut()) {
            let start = Instant::now();
            f();
            t.push(start.elapsed().as_secs_f64());
        }
    }
    v
}

/// The middle value (the upper one of an even count).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The median over rounds of `a`'s time over `b`'s in the same round: the
/// two ran a few milliseconds apart, so a slow spell longer than that
/// divides out, where a ratio of two medians keeps whatever the spells did
/// to each series.
fn paired_ratio(a: &[f64], b: &[f64]) -> f64 {
    median(a.iter().zip(b).map(|(x, y)| x / y).collect())
}

/// The fastest of a case's hand loops (`run(v)` runs the `v`th of
/// `variants`) and tiers on this machine, all timed in interleaved rounds.
/// (On this project's Intel machines AVX-512 wins where a loop computes,
/// and can lose a little where it only streams memory, since unaligned
/// 64-byte loads split cache lines.)
fn best_hand(variants: usize, mut run: impl FnMut(usize)) -> (usize, Isa) {
    // Within `LOSSC_BENCH_ISA`'s cap, like lossc.
    let cap = lossc::exec::isa::active();
    let wide: Vec<Isa> = Isa::available()
        .into_iter()
        .filter(|&t| t != Isa::Baseline && t <= cap)
        .collect();
    let tiers = if wide.is_empty() {
        vec![Isa::Baseline]
    } else {
        wide
    };
    let candidates: Vec<(usize, Isa)> = (0..variants)
        .flat_map(|v| tiers.iter().map(move |&t| (v, t)))
        .collect();
    if candidates.len() < 2 {
        return candidates[0];
    }
    let mut timed = |(v, t): (usize, Isa)| {
        set_hand_isa(t);
        let start = Instant::now();
        run(v);
        start.elapsed().as_secs_f64()
    };
    // One untimed call each first: the first round would otherwise pay
    // the first touches of the gradient for the first alone.
    for &c in &candidates {
        timed(c);
    }
    let mut times = vec![Vec::new(); candidates.len()];
    for _ in 0..7 {
        for (&c, t) in candidates.iter().zip(times.iter_mut()) {
            t.push(timed(c));
        }
    }
    let medians: Vec<f64> = times.into_iter().map(median).collect();
    let best = (0..candidates.len())
        .min_by(|&a, &b| medians[a].total_cmp(&medians[b]))
        .unwrap();
    candidates[best]
}

static TABLE: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn run<T: Float + LinalgScalar>(c: &mut Criterion) {
    let threads = rayon::current_num_threads();
    // `LOSSC_BENCH_CASES=huber,xray` measures only the cases whose names
    // contain one of the words.
    let only = std::env::var("LOSSC_BENCH_CASES").unwrap_or_default();
    let wanted = |name: &str| only.is_empty() || only.split(',').any(|w| name.contains(w));
    for mut case in cases::<T>().into_iter().filter(|c| wanted(&c.name)) {
        let path = format!("{}/examples/{}.loss", env!("CARGO_MANIFEST_DIR"), case.spec);
        let loss = Loss::from_file(&path).expect("example");
        // The generated backend where the spec has one (scalar losses), else
        // the interpreter; both are measured when both exist.
        let kernel = kernels::by_name::<T>(case.spec).filter(|k| k.generated_passes() > 0);
        let interp: Evaluator<T> = loss.compile::<T>().unwrap().with_threads(1).unwrap();
        let best = |threads: usize| {
            let e = loss.compile::<T>().unwrap().with_threads(threads).unwrap();
            match &kernel {
                Some(k) => e.with_kernel(k.clone()).unwrap(),
                None => e,
            }
        };
        let one: Evaluator<T> = best(1);
        let all: Evaluator<T> = best(threads);
        let mut inputs = Inputs::new();
        for (n, a) in &case.arrays {
            inputs.insert(*n, a.view());
        }
        let mut out: Output<T> = one.eval(&inputs).unwrap();
        let mut out_all: Output<T> = all.eval(&inputs).unwrap();
        let arrays: Vec<ArrayD<T>> = case.arrays.iter().map(|(_, a)| a.clone()).collect();
        let (variant, tier) = best_hand(case.hands.len(), |v| {
            black_box(case.hands[v].1.run(&arrays, &mut case.grads, 1));
        });
        set_hand_isa(tier);
        let (variant, hand) = &case.hands[variant];
        // Agreement with the hand loop, so the comparison is of equals.
        let hand_value = hand.run(&arrays, &mut case.grads, 1).unwrap();
        // The hand loop on every thread (per-row losses only) agrees too,
        // and writes every gradient (the buffers start as NaN).
        let parallel = threads > 1 && matches!(hand, Hand::Rows(_));
        let mut hand_grads: Vec<ArrayD<T>> = if parallel {
            let nan = T::of(f64::NAN);
            case.grads.iter().map(|g| g.mapv(|_| nan)).collect()
        } else {
            Vec::new()
        };
        if parallel {
            let v = hand.run(&arrays, &mut hand_grads, threads).unwrap();
            let tol = if T::NAME == "f32" { 1e-5 } else { 1e-12 };
            assert!(
                (v - hand_value).abs() <= tol * hand_value.abs(),
                "{}: {v} vs {hand_value}",
                case.name
            );
            let bits = |g: &[ArrayD<T>]| -> Vec<u64> {
                g.iter()
                    .flat_map(|a| a.iter().map(|x| x.f64().to_bits()))
                    .collect()
            };
            assert!(
                bits(&hand_grads) == bits(&case.grads),
                "{}: the hand loop's gradient on {threads} threads",
                case.name
            );
        }
        let rel = (out.loss().f64() - hand_value).abs() / hand_value.abs().max(1e-30);
        let tol = if T::NAME == "f32" { 1e-4 } else { 1e-10 };
        assert!(
            rel < tol,
            "{}: lossc {} vs hand {hand_value}",
            case.name,
            out.loss()
        );
        // And on every gradient, relative to its largest component.
        for ((name, g), h) in out.grads().zip(&case.grads) {
            let scale = h.iter().fold(0f64, |m, x| m.max(x.f64().abs())).max(1e-30);
            let worst = g
                .iter()
                .zip(h)
                .fold(0f64, |m, (a, b)| m.max((a.f64() - b.f64()).abs()));
            assert!(
                worst / scale < tol,
                "{}: gradient {name} differs from the hand loop's by {worst:e} (largest {scale:e})",
                case.name
            );
        }
        // Bytes allocated by a repeated evaluation (nothing, after the first).
        let base = LIVE.load(Ordering::Relaxed);
        PEAK.store(base, Ordering::Relaxed);
        one.eval_into(&inputs, &mut out).unwrap();
        let again = PEAK.load(Ordering::Relaxed) - base;
        // Bytes held between evaluations beyond the outputs: the scratch.
        let fresh_base = LIVE.load(Ordering::Relaxed);
        let fresh = one.eval(&inputs).unwrap();
        let held = LIVE.load(Ordering::Relaxed)
            - fresh_base
            - fresh
                .grads()
                .map(|(_, g)| g.len() * std::mem::size_of::<T>())
                .sum::<usize>();
        drop(fresh);

        // `LOSSC_BENCH_TABLE=1`: the table only, without criterion's
        // measurements (a quarter of the time).
        let criterion = std::env::var_os("LOSSC_BENCH_TABLE").is_none();
        let mut out_i: Output<T> = interp.eval(&inputs).unwrap();
        if criterion {
            let name = format!("{}/{}", T::NAME, case.name);
            let mut g = c.benchmark_group(&name);
            g.sample_size(10)
                .measurement_time(Duration::from_secs(3))
                .warm_up_time(Duration::from_millis(500));
            g.bench_function("hand-written", |b| {
                b.iter(|| black_box(hand.run(&arrays, &mut case.grads, 1)))
            });
            if kernel.is_some() {
                g.bench_function("lossc interpreter 1 thread", |b| {
                    b.iter(|| interp.eval_into(black_box(&inputs), &mut out_i).unwrap())
                });
            }
            g.bench_function("lossc 1 thread", |b| {
                b.iter(|| one.eval_into(black_box(&inputs), &mut out).unwrap())
            });
            g.bench_function(format!("lossc {threads} threads"), |b| {
                b.iter(|| all.eval_into(black_box(&inputs), &mut out_all).unwrap())
            });
            g.finish();
        }
        // Times are medians over interleaved rounds; ratios are medians of
        // the ratios within each round.
        let [th, t1, tn, ti, thn] = time_rounds(
            15,
            [
                &mut || {
                    black_box(hand.run(&arrays, &mut case.grads, 1));
                },
                &mut || one.eval_into(&inputs, &mut out).unwrap(),
                &mut || all.eval_into(&inputs, &mut out_all).unwrap(),
                &mut || interp.eval_into(&inputs, &mut out_i).unwrap(),
                &mut || {
                    if parallel {
                        black_box(hand.run(&arrays, &mut hand_grads, threads));
                    }
                },
            ],
        );
        let hand_all = if parallel {
            format!(
                "{:.2} ms | {:.2}x",
                median(thn.clone()) * 1e3,
                paired_ratio(&th, &thn)
            )
        } else {
            "- | -".into()
        };
        TABLE.lock().unwrap().push(format!(
            "| {} | {} | {} | {variant}, {} | {:.2} ms | {:.2} ms | {:.2}x | {:.2} ms | {:.2}x | {:.2} ms | {:.2}x | {hand_all} | {} B | {:.1} KiB |",
            case.name,
            T::NAME,
            if kernel.is_some() { "generated" } else { "interpreter" },
            tier.name(),
            median(th.clone()) * 1e3,
            median(ti.clone()) * 1e3,
            paired_ratio(&ti, &th),
            median(t1.clone()) * 1e3,
            paired_ratio(&t1, &th),
            median(tn.clone()) * 1e3,
            paired_ratio(&t1, &tn),
            again,
            held as f64 / 1024.0,
        ));
    }
}

fn compile_times(c: &mut Criterion) {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "loss"))
        .collect();
    paths.sort();
    let mut g = c.benchmark_group("compile");
    g.sample_size(10).measurement_time(Duration::from_secs(1));
    let mut rows = Vec::new();
    for p in paths {
        let name = p.file_stem().unwrap().to_string_lossy().into_owned();
        let loss = Loss::from_file(&p).unwrap();
        if std::env::var_os("LOSSC_BENCH_TABLE").is_none() {
            g.bench_function(&name, |b| b.iter(|| loss.compile::<f32>().unwrap()));
        }
        let t = time(9, || {
            black_box(loss.compile::<f32>().unwrap());
        });
        rows.push(format!("| {name} | {:.2} ms |", t * 1e3));
    }
    g.finish();
    let mut table = TABLE.lock().unwrap();
    table.push(String::new());
    table.push("| example | compile (parse done; derive + plan) |".into());
    table.push("|---|---|".into());
    table.extend(rows);
}

fn all(c: &mut Criterion) {
    // `LOSSC_BENCH_ISA=avx2` (or `baseline`) caps the tier lossc and the
    // hand loops run on, to measure as on a machine without the wider ones.
    if let Ok(v) = std::env::var("LOSSC_BENCH_ISA") {
        let cap: Isa = v.parse().unwrap_or_else(|e| panic!("LOSSC_BENCH_ISA: {e}"));
        lossc::exec::isa::limit(cap);
    }
    TABLE.lock().unwrap().extend([
        format!(
            "machine: {} cores, lossc path {}",
            rayon::current_num_threads(),
            lossc::exec::isa()
        ),
        String::new(),
        "| case | type | lossc backend | hand loop, on | hand-written, 1 thread | interpreter, 1 thread | ratio | lossc, 1 thread | ratio | lossc, all threads | speed-up | hand-written, all threads | its speed-up | allocated by a repeated eval | scratch held |".into(),
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|".into(),
    ]);
    run::<f32>(c);
    run::<f64>(c);
    compile_times(c);
    println!("\n{}", TABLE.lock().unwrap().join("\n"));
}

criterion_group!(benches, all);
criterion_main!(benches);
