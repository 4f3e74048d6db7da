//! The fast evaluator: a spec's value and gradients over ndarray arrays.
//!
//! [`crate::Loss::compile`] plans the simplified value and gradient forms
//! (see `plan.rs`) into passes of vector instructions that the executor
//! (`run.rs`) runs over chunks of rows, in parallel over fixed blocks of
//! rows. Results do not depend on the thread count: blocks are the same
//! whatever the number of threads, and their partial sums are added in
//! block order.
//!
//! ```
//! use lossc::{Inputs, Loss};
//! use ndarray::array;
//!
//! let loss = Loss::from_source(
//!     "loss demo\ntask binary\ndata y : label {0, 1}\npred z : logit\nminimize mean(bce_logits(y, z))\n",
//! )?;
//! let eval = loss.compile::<f64>()?;
//! let (y, z) = (array![1.0, 0.0], array![0.0, 0.0]);
//! let inputs = Inputs::new().with("y", y.view().into_dyn()).with("z", z.view().into_dyn());
//! let out = eval.eval(&inputs)?;
//! assert!((out.loss() - std::f64::consts::LN_2).abs() < 1e-15);
//! // d/dz of mean(bce) is (sigmoid(z) - y) / n.
//! assert_eq!(out.grad("z").as_slice().unwrap(), &[-0.25, 0.25]);
//! # Ok::<(), lossc::Error>(())
//! ```

pub mod check;
pub(crate) mod codegen;
pub mod isa;
pub mod math;
pub(crate) mod plan;
pub(crate) mod run;
mod select;
mod softmax;

pub use isa::{Isa, avx2, avx512, isa};
pub use math::Float;

use crate::grad::{Derivation, Factor};
use crate::sema::types::{Dom, Size};
use ndarray::{ArrayD, ArrayViewD, IxDyn};
use plan::Plan;
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// The arrays a spec is evaluated on, by the names of its `data` and `pred`
/// declarations. A scalar is one value per row (shape `[n]`); a vector of
/// size `C` is `[n, C]`.
#[derive(Clone, Debug, Default)]
pub struct Inputs<'a, T> {
    arrays: BTreeMap<String, ArrayViewD<'a, T>>,
}

impl<'a, T> Inputs<'a, T> {
    /// No arrays yet.
    pub fn new() -> Self {
        Inputs {
            arrays: BTreeMap::new(),
        }
    }

    /// Adds (or replaces) the array for `name`.
    pub fn with(mut self, name: impl Into<String>, array: ArrayViewD<'a, T>) -> Self {
        self.insert(name, array);
        self
    }

    /// Adds (or replaces) the array for `name` in place.
    pub fn insert(&mut self, name: impl Into<String>, array: ArrayViewD<'a, T>) {
        self.arrays.insert(name.into(), array);
    }

    /// The array given for `name`.
    pub fn get(&self, name: &str) -> Option<&ArrayViewD<'a, T>> {
        self.arrays.get(name)
    }

    /// The names given, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.arrays.keys().map(String::as_str)
    }
}

/// Why an evaluation was refused. Every variant names the input, and for
/// a value, the row (and component) and the value itself.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EvalError {
    /// A declared data or pred has no array.
    #[error("no array for {kind} `{name}` ({type_text}); given: {given}")]
    Missing {
        /// `data` or `pred`.
        kind: &'static str,
        /// The declared name.
        name: String,
        /// The declared type.
        type_text: String,
        /// The names that were given.
        given: String,
    },
    /// An array has the wrong number of axes.
    #[error("`{name}` has shape {shape}, but {type_text} needs {expected}")]
    Shape {
        /// The input.
        name: String,
        /// Its shape.
        shape: String,
        /// The declared type.
        type_text: String,
        /// What the type needs.
        expected: String,
    },
    /// Arrays disagree on the number of rows.
    #[error("`{name}` has {rows} rows, but `{first}` has {first_rows}")]
    Rows {
        /// The input.
        name: String,
        /// Its rows.
        rows: usize,
        /// The first input.
        first: String,
        /// Its rows.
        first_rows: usize,
    },
    /// Arrays disagree on a size's length (or a literal size is not met).
    #[error("size {size} is {len} for `{name}`, but {other}")]
    Size {
        /// The size name or number.
        size: String,
        /// The input.
        name: String,
        /// Its length there.
        len: usize,
        /// What fixed the size before.
        other: String,
    },
    /// No input or declaration fixes a size the spec needs.
    #[error("the length of size {size} is not known: no vector input has it (`{name}` needs it)")]
    UnknownSize {
        /// The size.
        size: String,
        /// The input that needs it.
        name: String,
    },
    /// No rows.
    #[error("the batch is empty: `{name}` has 0 rows")]
    Empty {
        /// The first input.
        name: String,
    },
    /// A value outside its declared domain.
    #[error("`{name}` at row {row}{} is {value}, outside `{type_text}` ({domain})", component.map_or(String::new(), |c| format!(", component {c}")))]
    Domain {
        /// The input.
        name: String,
        /// The declared type.
        type_text: String,
        /// The row.
        row: usize,
        /// The component, for a vector.
        component: Option<usize>,
        /// The value.
        value: f64,
        /// The declared domain, described.
        domain: String,
    },
    /// A row of a simplex-valued input that does not sum to 1, or a one-hot
    /// row without exactly one 1.
    #[error("`{name}` at row {row}: {problem}")]
    Row {
        /// The input.
        name: String,
        /// The row.
        row: usize,
        /// What is wrong with it.
        problem: String,
    },
    /// The spec cannot be planned for evaluation.
    #[error("cannot compile the spec for evaluation: {0}")]
    Unsupported(String),
    /// A pred name that the spec does not declare.
    #[error("`{0}` is not a pred of this spec")]
    NotAPred(String),
}

/// What a generated pass function reads and writes: the inputs, tables,
/// per-evaluation scalars and outputs of one evaluation. Generated code
/// (see [`Kernel`]) is its only intended user.
pub struct Block<'a, T> {
    cx: &'a run::Ctx<'a, T>,
    rows: usize,
    plan: &'a Plan,
    lens: &'a [usize],
    scratch: &'a [Mutex<run::Scratch<T>>],
}

/// A worker's scratch buffer for generated code (see [`Block::scratch`]):
/// held, and not shared, until dropped.
pub struct ScratchBuf<'a, T> {
    guard: std::sync::MutexGuard<'a, run::Scratch<T>>,
    len: usize,
}

impl<T> std::ops::Deref for ScratchBuf<'_, T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.guard.kernel[..self.len]
    }
}

impl<T> std::ops::DerefMut for ScratchBuf<'_, T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.guard.kernel[..self.len]
    }
}

impl<T: Float> Block<'_, T> {
    /// The number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }
    /// Input `slot`'s data (row-major, `rows` times its width values).
    pub fn input(&self, slot: usize) -> *const T {
        self.cx.inputs[slot].ptr
    }
    /// Input `slot`'s values per row: 1 for a scalar, the length of its
    /// size for a vector (gradients of a pred have the same width).
    pub fn width(&self, slot: usize) -> usize {
        self.cx.inputs[slot].width
    }
    /// The length of size slot `s` in this evaluation (a loop's extent).
    pub fn size(&self, s: usize) -> usize {
        self.lens[s]
    }
    /// Runs rows `[b0, b1)` on the interpreter, as the evaluator does for a
    /// pass without generated code (testing the block's inputs first when
    /// values are tested block by block); returns whether they were valid.
    /// Like the pass functions, it writes the rows' outputs;
    /// [`Kernel::new`]'s contract keeps each call to its own rows.
    pub fn interpret(&self, b0: usize, b1: usize, sums: &mut [f64]) -> bool {
        let b1 = b1.min(self.rows);
        let b0 = b0.min(b1);
        if self.plan.checks_per_block() {
            let ok = self.plan.inputs.iter().zip(self.cx.inputs).all(|(d, x)| {
                let c = check::Check::new(&d.dom, &self.plan.sizes, self.lens);
                // SAFETY: each input has `rows` rows of `width` values.
                unsafe { check::block_ok(&d.dom, c, x.ptr, x.width, b0, b1) }
            });
            if !ok {
                return false;
            }
        }
        run::run_block(self.cx, &mut self.worker(), b0, b1, sums, 0);
        true
    }

    /// Runs the blocks `blocks` of a pass that scatters, one after another
    /// (block `b` is rows `[b * block, (b + 1) * block)`), adding into
    /// `group`'s scatter buffers; `parts` holds their partial sums.
    fn scatter_group(
        &self,
        blocks: std::ops::Range<usize>,
        block: usize,
        parts: &mut [f64],
        group: usize,
    ) {
        let width = parts.len() / blocks.len().max(1);
        let mut worker = self.worker();
        for (b, part) in blocks.zip(parts.chunks_mut(width.max(1))) {
            let b0 = b * block;
            let b1 = (b0 + block).min(self.rows);
            run::run_block(self.cx, &mut worker, b0, b1, part, group);
        }
    }
    /// This worker's buffers (the evaluator keeps one set per thread).
    fn worker(&self) -> std::sync::MutexGuard<'_, run::Scratch<T>> {
        let w = rayon::current_thread_index().unwrap_or(0) % self.scratch.len().max(1);
        self.scratch[w].lock().unwrap_or_else(|p| p.into_inner())
    }
    /// `len` values of this worker's scratch, kept between evaluations (so
    /// that a repeated evaluation allocates nothing): per-row buffers of
    /// generated loops over a vector's components.
    pub fn scratch(&self, len: usize) -> ScratchBuf<'_, T> {
        let mut guard = self.worker();
        if guard.kernel.len() < len {
            guard.kernel.resize(len, T::ZERO);
        }
        ScratchBuf { guard, len }
    }
    /// Table `t` (one value per row), filled by an earlier pass.
    pub fn table(&self, t: usize) -> *const T {
        self.cx.tables[t]
    }
    /// Table `t`, for the pass that fills it.
    pub fn table_out(&self, t: usize) -> *mut T {
        self.cx.sinks.tables[t]
    }
    /// Gradient output `i` (in pred order).
    pub fn grad(&self, i: usize) -> *mut T {
        self.cx.sinks.grads[i].0
    }
    /// Hessian output `i`.
    pub fn hessian(&self, i: usize) -> *mut T {
        self.cx.sinks.hessians[i].0
    }
    /// Per-evaluation scalar `u` (a size's length or a sample reduction).
    pub fn uniform(&self, u: usize) -> T {
        self.cx.uniforms[u]
    }
    /// The reduction factor gradients are multiplied by (`1/n` for a mean).
    pub fn scale(&self) -> T {
        self.cx.sinks.scale
    }
    /// Whether every value of input `slot` in rows `[r0, r1)` lies in its
    /// declared domain: for domains generated code does not test inline
    /// (label sets of more than two values, class indices, one-hot and
    /// simplex rows).
    pub fn valid(&self, slot: usize, r0: usize, r1: usize) -> bool {
        let d = &self.plan.inputs[slot];
        let x = &self.cx.inputs[slot];
        let c = check::Check::new(&d.dom, &self.plan.sizes, self.lens);
        // SAFETY: each input has `rows` rows of `width` values, and
        // `r0 <= r1 <= rows`.
        r1 <= self.rows && unsafe { check::block_ok(&d.dom, c, x.ptr, x.width, r0, r1.max(r0)) }
    }
}

/// A generated pass: rows `[b0, b1)`, adding sample-reduction partial sums
/// into the last argument. It tests every input value of its rows against
/// its domain as it reads it, and returns whether all were valid (if not,
/// the evaluator discards the results and reports the first bad value).
pub type PassFn<T> = fn(&Block<'_, T>, usize, usize, &mut [f64]) -> bool;

/// Generated code for some of an evaluator's passes (from `lossc codegen`,
/// see [`crate::Loss::codegen`]); attach it with [`Evaluator::with_kernel`].
pub struct Kernel<T> {
    fingerprint: u64,
    passes: Vec<Option<PassFn<T>>>,
}

impl<T> Clone for Kernel<T> {
    fn clone(&self) -> Self {
        Kernel {
            fingerprint: self.fingerprint,
            passes: self.passes.clone(),
        }
    }
}

impl<T> Kernel<T> {
    /// A kernel from generated pass functions.
    ///
    /// # Safety
    ///
    /// The functions read and write through the [`Block`]'s raw pointers as
    /// the plan with this fingerprint lays them out, and call
    /// [`Block::interpret`] only for the rows they were given; only code
    /// generated by lossc for that plan may be passed.
    pub unsafe fn new(fingerprint: u64, passes: Vec<Option<PassFn<T>>>) -> Self {
        Kernel {
            fingerprint,
            passes,
        }
    }

    /// How many passes run generated code.
    pub fn generated_passes(&self) -> usize {
        self.passes.iter().filter(|p| p.is_some()).count()
    }
}

/// A compiled spec: evaluates the objective and every pred's gradient.
#[derive(Clone)]
pub struct Evaluator<T> {
    shared: Arc<Shared>,
    pool: Option<Arc<rayon::ThreadPool>>,
    kernel: Option<Kernel<T>>,
    _t: std::marker::PhantomData<fn() -> T>,
}

struct Shared {
    plan: Plan,
    derivation: Derivation,
    /// Sizes the spec itself fixes.
    fixed: BTreeMap<String, u64>,
    hessian: bool,
}

impl<T> std::fmt::Debug for Evaluator<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Evaluator")
            .field("passes", &self.shared.plan.passes.len())
            .field("hessian", &self.shared.hessian)
            .finish()
    }
}

/// The result of an evaluation, and the buffers a later
/// [`Evaluator::eval_into`] reuses.
pub struct Output<T> {
    loss: T,
    reductions: Vec<f64>,
    grads: Vec<(String, ArrayD<T>)>,
    hessians: Vec<(String, ArrayD<T>)>,
    state: State<T>,
}

impl<T: Float> std::fmt::Debug for Output<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Output")
            .field("loss", &self.loss)
            .field("grads", &self.grads)
            .field("hessians", &self.hessians)
            .finish()
    }
}

impl<T: Float> Output<T> {
    /// The objective's value.
    pub fn loss(&self) -> T {
        self.loss
    }

    /// The gradient of the objective with respect to pred `name`, with the
    /// pred's shape.
    ///
    /// # Panics
    ///
    /// If `name` is not a pred of the spec, like indexing a map with a
    /// missing key; [`Output::try_grad`] returns an option instead.
    pub fn grad(&self, name: &str) -> ArrayViewD<'_, T> {
        self.try_grad(name)
            .unwrap_or_else(|| panic!("`{name}` is not a pred of this spec"))
    }

    /// The gradient for pred `name`, if the spec has that pred.
    pub fn try_grad(&self, name: &str) -> Option<ArrayViewD<'_, T>> {
        self.grads
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| a.view())
    }

    /// Every gradient, in the order the preds are declared.
    pub fn grads(&self) -> impl Iterator<Item = (&str, ArrayViewD<'_, T>)> {
        self.grads.iter().map(|(n, a)| (n.as_str(), a.view()))
    }

    /// The diagonal of the Hessian for scalar pred `name` (evaluators made
    /// with [`Evaluator::with_hessian`] only).
    pub fn hessian(&self, name: &str) -> Option<ArrayViewD<'_, T>> {
        self.hessians
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| a.view())
    }

    /// Every Hessian diagonal, in declaration order.
    pub fn hessians(&self) -> impl Iterator<Item = (&str, ArrayViewD<'_, T>)> {
        self.hessians.iter().map(|(n, a)| (n.as_str(), a.view()))
    }

    /// The values of the sample reductions `R0, R1, ...` the objective is
    /// built from (for `minimize mean(ℓ)`, the one mean).
    pub fn reductions(&self) -> &[f64] {
        &self.reductions
    }
}

/// Buffers kept between evaluations.
struct State<T> {
    scratch: Vec<Mutex<run::Scratch<T>>>,
    partials: Vec<f64>,
    tables: Vec<Vec<T>>,
    /// Contiguous copies of inputs given in another memory order.
    copies: Vec<Vec<T>>,
    layouts: Vec<(Vec<usize>, usize, run::Layout)>,
    data: Vec<run::InputData<T>>,
    sizes: Vec<usize>,
    size_src: Vec<Option<usize>>,
    sink_grads: Vec<(*mut T, usize)>,
    sink_hessians: Vec<(*mut T, usize)>,
    sink_tables: Vec<*mut T>,
    table_ptrs: Vec<*const T>,
    /// Each scatter's buffers: [`SCATTER_GROUPS`] of `n` rows each, or
    /// one where the first group is in a gradient's array.
    scatters: Vec<Vec<T>>,
    sink_scatters: Vec<(*mut T, *mut T, usize)>,
    reduced: Vec<f64>,
    uniforms: Vec<T>,
}

impl<T> Default for State<T> {
    fn default() -> Self {
        State {
            scratch: Vec::new(),
            partials: Vec::new(),
            tables: Vec::new(),
            copies: Vec::new(),
            layouts: Vec::new(),
            data: Vec::new(),
            sizes: Vec::new(),
            size_src: Vec::new(),
            sink_grads: Vec::new(),
            sink_hessians: Vec::new(),
            sink_tables: Vec::new(),
            table_ptrs: Vec::new(),
            scatters: Vec::new(),
            sink_scatters: Vec::new(),
            reduced: Vec::new(),
            uniforms: Vec::new(),
        }
    }
}

// SAFETY: the raw pointers are scratch values rewritten at the start of
// every evaluation, never dereferenced outside one.
unsafe impl<T: Send> Send for State<T> {}
unsafe impl<T: Sync> Sync for State<T> {}

/// Values per parallel block of a pass without batch coupling (rows times
/// the widest input's width, rounded up to whole chunks): large enough to
/// amortise scheduling, small enough to balance two to a few dozen threads
/// at a million scalar rows or a hundred thousand rows of 1000 logits.
const BLOCK_VALUES: usize = 16 * 1024;

/// The groups of blocks a pass that scatters runs in: each adds into its
/// own buffers, its blocks in order, and the buffers are added in group
/// order, so that the sums do not depend on the thread count. Two keep
/// both cores of the machines we measure on busy, for one more buffer.
/// (The pass is written for exactly two: one split, one `rayon::join`, the
/// first group's sums possibly in a gradient's array.)
const SCATTER_GROUPS: usize = 2;

impl<T: Float> Evaluator<T> {
    pub(crate) fn new(
        derivation: Derivation,
        checked: &crate::Checked,
        hessian: bool,
    ) -> Result<Self, EvalError> {
        let mut d = derivation;
        if !hessian {
            for p in &mut d.preds {
                p.hessian = None;
            }
        }
        let plan = plan::plan(&d, checked).map_err(|e| EvalError::Unsupported(e.0))?;
        Ok(Evaluator {
            shared: Arc::new(Shared {
                plan,
                derivation: d,
                fixed: checked
                    .sizes
                    .iter()
                    .filter_map(|(k, v)| v.map(|v| (k.clone(), v)))
                    .collect(),
                hessian,
            }),
            pool: None,
            kernel: None,
            _t: std::marker::PhantomData,
        })
    }

    /// The same evaluator running generated code (from `lossc codegen` on
    /// the same spec, params and lossc version) for the passes it covers.
    pub fn with_kernel(mut self, kernel: Kernel<T>) -> Result<Self, EvalError> {
        let want = codegen::fingerprint(&self.shared.plan);
        if kernel.fingerprint != want || kernel.passes.len() != self.shared.plan.passes.len() {
            return Err(EvalError::Unsupported(format!(
                "the generated kernel does not match this spec (fingerprint {:#018x}, expected {want:#018x}): regenerate it with `lossc codegen` for the same spec, params and lossc version",
                kernel.fingerprint
            )));
        }
        self.kernel = Some(kernel);
        Ok(self)
    }

    /// Rust source of a kernel for this evaluator (see [`crate::Loss::codegen`]).
    pub fn rust_source(&self, module: &str, origin: &str) -> String {
        codegen::rust_module(&self.shared.plan, module, origin)
    }

    /// The same evaluator running on its own pool of `threads` threads
    /// (the default is rayon's global pool, one thread per core).
    pub fn with_threads(mut self, threads: usize) -> Result<Self, EvalError> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads.max(1))
            .build()
            .map_err(|e| EvalError::Unsupported(format!("cannot start {threads} threads: {e}")))?;
        self.pool = Some(Arc::new(pool));
        Ok(self)
    }

    /// Whether the evaluator also computes the Hessian's diagonal.
    pub fn has_hessian(&self) -> bool {
        self.shared.hessian
    }

    /// The derivation the evaluator was compiled from.
    pub fn derivation(&self) -> &Derivation {
        &self.shared.derivation
    }

    /// The number of passes over the rows one evaluation makes (1 for a
    /// per-row loss; more when a gradient needs the objective's sums first
    /// or per-row quantities are read at other rows).
    pub fn passes(&self) -> usize {
        self.shared.plan.passes.len()
    }

    /// The compiled program as text: its passes, loops and instructions
    /// (registers are `r<N>[loops;rows]`).
    pub fn describe(&self) -> String {
        self.shared.plan.describe()
    }

    /// Evaluates the objective and every gradient.
    pub fn eval(&self, inputs: &Inputs<'_, T>) -> Result<Output<T>, EvalError> {
        let mut out = Output {
            loss: T::ZERO,
            reductions: Vec::new(),
            grads: Vec::new(),
            hessians: Vec::new(),
            state: State::default(),
        };
        self.eval_into(inputs, &mut out)?;
        Ok(out)
    }

    /// Evaluates into an earlier result, reusing its buffers: after the
    /// first call with given shapes it allocates nothing.
    ///
    /// No value is computed from an invalid input, but a single-pass spec
    /// checks its inputs block by block, just before computing each block
    /// (so the check reads rows already in cache): on an error the
    /// gradients in `out` may be partly overwritten, and its loss is NaN.
    pub fn eval_into(&self, inputs: &Inputs<'_, T>, out: &mut Output<T>) -> Result<(), EvalError> {
        let r = match &self.pool {
            Some(pool) => pool.install(|| self.run(inputs, out)),
            None => self.run(inputs, out),
        };
        if r.is_err() {
            out.loss = T::of(f64::NAN);
        }
        r
    }

    fn run(&self, inputs: &Inputs<'_, T>, out: &mut Output<T>) -> Result<(), EvalError> {
        let sh = &*self.shared;
        let plan = &sh.plan;
        let State {
            scratch,
            partials,
            tables,
            copies,
            layouts,
            data,
            sizes,
            size_src,
            sink_grads,
            sink_hessians,
            sink_tables,
            table_ptrs,
            scatters,
            sink_scatters,
            reduced,
            uniforms,
        } = &mut out.state;
        let rows = self.validate(inputs, sizes, size_src)?;
        if scatters.len() < plan.scatters.len() {
            scatters.resize_with(plan.scatters.len(), Vec::new);
        }
        // Outputs with the preds' shapes.
        reshape(&mut out.grads, &plan.grads, plan, inputs);
        reshape(&mut out.hessians, &plan.hessians, plan, inputs);
        // Each scatter's two groups of sums: the first in the gradient it
        // feeds where that is safe (`ScatterDecl::into`), else in its own
        // buffer.
        sink_scatters.clear();
        for (sc, buf) in plan.scatters.iter().zip(scatters.iter_mut()) {
            let width = sc.size.map_or(1, |s| sizes[s as usize]);
            let own = if sc.into.is_some() { 1 } else { 2 };
            buf.resize(own * rows * width, T::ZERO);
            let first = match sc.into {
                Some(o) => out.grads[o as usize].1.as_mut_ptr(),
                None => buf.as_mut_ptr(),
            };
            // SAFETY: the second group's values follow the first's in `buf`.
            let second = unsafe { buf.as_mut_ptr().add((own - 1) * rows * width) };
            sink_scatters.push((first, second, width));
        }
        // Inputs: in place when contiguous, else copied.
        if copies.len() < plan.inputs.len() {
            copies.resize_with(plan.inputs.len(), Vec::new);
        }
        data.clear();
        for (i, decl) in plan.inputs.iter().enumerate() {
            let a = &inputs.arrays[&decl.name];
            let width = decl.size.map_or(1, |s| sizes[s as usize]);
            let ptr = match a.as_slice() {
                Some(s) => s.as_ptr(),
                None => {
                    let c = &mut copies[i];
                    c.clear();
                    c.extend(a.iter().copied());
                    c.as_ptr()
                }
            };
            data.push(run::InputData { ptr, width });
        }
        // A scatter's buffer is read like an input by the passes after it.
        for &(ptr, _, width) in sink_scatters.iter() {
            data.push(run::InputData { ptr, width });
        }
        let scale = match sh.derivation.factor {
            Factor::OneOverN => T::of(1.0 / rows as f64),
            Factor::One => T::ONE,
        };
        sink_grads.clear();
        for (o, (_, a)) in plan.grads.iter().zip(out.grads.iter_mut()) {
            sink_grads.push((a.as_mut_ptr(), data[o.slot as usize].width));
        }
        sink_hessians.clear();
        for (o, (_, a)) in plan.hessians.iter().zip(out.hessians.iter_mut()) {
            sink_hessians.push((a.as_mut_ptr(), data[o.slot as usize].width));
        }
        if tables.len() < plan.tables.len() {
            tables.resize_with(plan.tables.len(), Vec::new);
        }
        sink_tables.clear();
        table_ptrs.clear();
        for t in tables.iter_mut() {
            t.resize(rows, T::ZERO);
            sink_tables.push(t.as_mut_ptr());
            table_ptrs.push(t.as_ptr());
        }
        let sinks = run::Sinks {
            grads: sink_grads,
            hessians: sink_hessians,
            tables: sink_tables,
            scatters: sink_scatters,
            scale,
        };
        let threads = rayon::current_num_threads();
        if scratch.len() < threads {
            scratch.resize_with(threads, || Mutex::new(run::Scratch::default()));
        }
        let nsum = plan.reductions.len();
        reduced.clear();
        reduced.resize(nsum, f64::NAN);
        uniforms.clear();
        uniforms.resize(plan.uniforms.len(), T::ZERO);
        for (pi, pass) in plan.passes.iter().enumerate() {
            for (u, src) in plan.uniforms.iter().enumerate() {
                uniforms[u] = match src {
                    plan::UniformSrc::Size(s) => T::of(sizes[*s as usize] as f64),
                    plan::UniformSrc::Reduced(i) => T::of(reduced[*i]),
                };
            }
            let width = |slot: u16| data[slot as usize].width;
            let value_bytes = std::mem::size_of::<T>();
            let layout = cached_layout(layouts, pi, pass, sizes, rows, &width, value_bytes);
            let cx = run::Ctx {
                pass,
                layout,
                inputs: data,
                tables: table_ptrs,
                uniforms,
                sinks: &sinks,
            };
            // Fixed by the shapes alone, so the same whatever the threads.
            let block = if pass.coupled {
                layout.chunk
            } else {
                let widest = data.iter().map(|x| x.width).max().unwrap_or(1).max(1);
                (BLOCK_VALUES / widest).div_ceil(layout.chunk).max(1) * layout.chunk
            };
            let nblocks = rows.div_ceil(block);
            let width = nsum.max(1);
            partials.clear();
            partials.resize(nblocks * width, 0.0);
            let scratch = &*scratch;
            let generated = self.kernel.as_ref().and_then(|k| k.passes[pi]);
            let blk = Block {
                cx: &cx,
                rows,
                plan,
                lens: sizes,
                scratch,
            };
            let invalid = AtomicBool::new(false);
            let work = |b: usize, part: &mut [f64]| {
                let b0 = b * block;
                let b1 = (b0 + block).min(rows);
                // Generated code tests values as it reads them.
                let ok = match generated {
                    Some(f) => f(&blk, b0, b1, part),
                    None => blk.interpret(b0, b1, part),
                };
                if !ok {
                    invalid.store(true, Ordering::Relaxed);
                }
            };
            if !pass.scatters.is_empty() {
                let groups = |i: u16| {
                    let (first, second, width) = sinks.scatters[i as usize];
                    // SAFETY: each group holds `rows * width` values, in
                    // two buffers (or the gradient's array and a buffer).
                    unsafe {
                        (
                            std::slice::from_raw_parts_mut(first, rows * width),
                            std::slice::from_raw_parts_mut(second, rows * width),
                        )
                    }
                };
                for &i in &pass.scatters {
                    let (g0, g1) = groups(i);
                    g0.fill(T::ZERO);
                    g1.fill(T::ZERO);
                }
                // Two groups of consecutive blocks (see `SCATTER_GROUPS`).
                let mid = nblocks / SCATTER_GROUPS;
                let (p0, p1) = partials.split_at_mut(mid * width);
                let b = &blk;
                let mut first = move || b.scatter_group(0..mid, block, p0, 0);
                let mut second = move || b.scatter_group(mid..nblocks, block, p1, 1);
                if threads == 1 {
                    first();
                    second();
                } else {
                    rayon::join(first, second);
                }
                for &i in &pass.scatters {
                    let (g0, g1) = groups(i);
                    for (a, &b) in g0.iter_mut().zip(g1.iter()) {
                        *a = *a + b;
                    }
                }
            } else if threads == 1 || nblocks == 1 {
                for (b, part) in partials.chunks_mut(width).enumerate() {
                    work(b, part);
                }
            } else {
                partials
                    .par_chunks_mut(width)
                    .enumerate()
                    .for_each(|(b, part)| work(b, part));
            }
            if invalid.load(Ordering::Relaxed) {
                // The same test over whole inputs finds and describes it.
                self.check_values(inputs, sizes)?;
                return Err(EvalError::Unsupported(
                    "internal error: a block failed its input checks but the inputs passed them"
                        .into(),
                ));
            }
            if !pass.sums.is_empty() {
                for (i, r) in reduced.iter_mut().enumerate() {
                    let total: f64 = partials.chunks(width).map(|p| p[i]).sum();
                    *r = if plan.mean[i] {
                        total / rows as f64
                    } else {
                        total
                    };
                }
            }
        }
        // The objective from the reductions (a handful of scalars).
        let value = plan.scalar(plan.outer, &|u| match plan.uniforms[u as usize] {
            plan::UniformSrc::Size(s) => sizes[s as usize] as f64,
            plan::UniformSrc::Reduced(i) => reduced[i],
        });
        out.loss = T::of(value);
        out.reductions.clear();
        out.reductions.extend_from_slice(reduced);
        Ok(())
    }

    /// Checks every input before any work; returns the row count and fills
    /// each size slot's length. Allocates only to describe an error.
    fn validate(
        &self,
        inputs: &Inputs<'_, T>,
        lens: &mut Vec<usize>,
        src: &mut Vec<Option<usize>>,
    ) -> Result<usize, EvalError> {
        let plan = &self.shared.plan;
        // Each size's length, and where it came from: `None` for the spec.
        lens.clear();
        src.clear();
        for sz in &plan.sizes {
            let fixed = match sz {
                Size::Lit(v) => Some(*v as usize),
                Size::Name(n) => self.shared.fixed.get(n).map(|v| *v as usize),
            };
            lens.push(fixed.unwrap_or(usize::MAX));
            src.push(None);
        }
        let mut rows: Option<(usize, &str)> = None;
        for (i, decl) in plan.inputs.iter().enumerate() {
            let kind = if decl.is_pred { "pred" } else { "data" };
            let Some(a) = inputs.arrays.get(&decl.name) else {
                let given: Vec<&str> = inputs.names().collect();
                return Err(EvalError::Missing {
                    kind,
                    name: decl.name.clone(),
                    type_text: decl.type_text.clone(),
                    given: if given.is_empty() {
                        "nothing".into()
                    } else {
                        given.join(", ")
                    },
                });
            };
            let want = if decl.size.is_some() { 2 } else { 1 };
            if a.ndim() != want {
                return Err(EvalError::Shape {
                    name: decl.name.clone(),
                    shape: format!("{:?}", a.shape()),
                    type_text: decl.type_text.clone(),
                    expected: if want == 1 {
                        "one value per row, shape [n]".into()
                    } else {
                        let s = &plan.sizes[decl.size.unwrap_or(0) as usize];
                        format!("one row of {s} values per row, shape [n, {s}]")
                    },
                });
            }
            let n = a.shape()[0];
            match rows {
                None => rows = Some((n, &decl.name)),
                Some((r, first)) if r != n => {
                    return Err(EvalError::Rows {
                        name: decl.name.clone(),
                        rows: n,
                        first: first.to_string(),
                        first_rows: r,
                    });
                }
                _ => {}
            }
            if let Some(s) = decl.size {
                let (s, len) = (s as usize, a.shape()[1]);
                if lens[s] == usize::MAX {
                    lens[s] = len;
                    src[s] = Some(i);
                } else if lens[s] != len {
                    let other = match src[s] {
                        Some(j) => format!("it is {} for `{}`", lens[s], plan.inputs[j].name),
                        None => format!("the spec fixes it to {}", lens[s]),
                    };
                    return Err(EvalError::Size {
                        size: plan.sizes[s].to_string(),
                        name: decl.name.clone(),
                        len,
                        other,
                    });
                }
            }
        }
        let (rows, first) = rows.unwrap_or((0, "?"));
        if rows == 0 {
            return Err(EvalError::Empty {
                name: first.to_string(),
            });
        }
        if let Some(i) = lens.iter().position(|&l| l == usize::MAX) {
            let needs = plan
                .inputs
                .iter()
                .find(|d| matches!(&d.dom, Dom::Class(c) if *c == plan.sizes[i]))
                .map_or("the objective".to_string(), |d| d.name.clone());
            return Err(EvalError::UnknownSize {
                size: plan.sizes[i].to_string(),
                name: needs,
            });
        }
        if !self.fused_checks() {
            self.check_values(inputs, lens)?;
        }
        Ok(rows)
    }

    /// Whether values are checked block by block just before each block is
    /// computed (rather than all before any work): when the plan is one
    /// pass that reads only its own block's rows, so no block reads a row
    /// that has not been checked.
    fn fused_checks(&self) -> bool {
        self.shared.plan.checks_per_block()
    }

    /// Checks every value of every input, in declaration order, and
    /// describes the first one outside its domain.
    fn check_values(&self, inputs: &Inputs<'_, T>, lens: &[usize]) -> Result<(), EvalError> {
        let plan = &self.shared.plan;
        for decl in &plan.inputs {
            let a = &inputs.arrays[&decl.name];
            check::check_domain(decl, a, &plan.sizes, lens)?;
        }
        Ok(())
    }
}

fn cached_layout<'a>(
    cache: &'a mut Vec<(Vec<usize>, usize, run::Layout)>,
    pass_index: usize,
    pass: &plan::Pass,
    sizes: &[usize],
    rows: usize,
    width: &dyn Fn(u16) -> usize,
    value_bytes: usize,
) -> &'a run::Layout {
    if cache.len() <= pass_index {
        cache.resize_with(pass_index + 1, || (Vec::new(), usize::MAX, layout_empty()));
    }
    let (s, r, l) = &mut cache[pass_index];
    if s.as_slice() != sizes || *r != rows {
        *l = run::layout(pass, sizes, rows, width, value_bytes);
        s.clear();
        s.extend_from_slice(sizes);
        *r = rows;
    }
    l
}

fn layout_empty() -> run::Layout {
    run::Layout {
        chunk: 1,
        tile: Vec::new(),
        extent: Vec::new(),
        offset: Vec::new(),
        arena: 0,
        skip: Vec::new(),
        in_place: Vec::new(),
    }
}

/// Makes `outs` hold one zeroed array per output with its pred's shape,
/// keeping the arrays (allocating nothing) when they already do.
fn reshape<T: Float>(
    outs: &mut Vec<(String, ArrayD<T>)>,
    decls: &[plan::OutputDecl],
    plan: &Plan,
    inputs: &Inputs<'_, T>,
) {
    let shape_of = |o: &plan::OutputDecl| {
        let name = &plan.inputs[o.slot as usize].name;
        (name, inputs.arrays[name].shape())
    };
    let same = outs.len() == decls.len()
        && outs.iter().zip(decls).all(|((n, a), o)| {
            let (m, s) = shape_of(o);
            n == m && a.shape() == s
        });
    if !same {
        outs.clear();
        for o in decls {
            let (n, s) = shape_of(o);
            outs.push((n.clone(), ArrayD::from_elem(IxDyn(s), T::ZERO)));
        }
    }
}
