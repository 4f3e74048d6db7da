//! lossc: a compiler for machine-learning loss functions.
//!
//! A `.loss` file states a loss the way an ML engineer designs one: the task,
//! the data and the model's outputs with their domains, the formula, and the
//! properties the author expects. lossc reads it through this pipeline:
//!
//! ```text
//! .loss text ──parse──▶ AST (spans) ──sema──▶ Checked spec
//!   (grammar/loss.pest,   (ast.rs)     (sema/: names, shapes, domains,
//!    parse/: Pratt ops)                  levels, the prelude's signatures)
//! ```
//!
//! | stage   | module            | input → output                          |
//! |---------|-------------------|-----------------------------------------|
//! | parse   | [`parse`]         | text → [`ast::Spec`] or a syntax error   |
//! | check   | [`sema`]          | spec → [`sema::Checked`] or every error  |
//! | report  | [`diag`]          | diagnostics → rendered, located messages |
//!
//! Later stages (symbolic differentiation, the fused evaluator, analysis and
//! validation) build on [`Loss`], which is the stable entry point:
//!
//! ```
//! use lossc::Loss;
//!
//! let loss = Loss::from_source(
//!     "loss demo\ntask binary\ndata y : label {0, 1}\npred z : logit\nminimize mean(bce_logits(y, z))\n",
//! )?;
//! assert_eq!(loss.checked().name, "demo");
//! assert!(loss.warnings().is_empty());
//! # Ok::<(), lossc::Error>(())
//! ```
//!
//! Errors never panic: a malformed spec yields [`Error::Spec`], whose
//! [`Report`] renders every diagnostic with its file, line and column.

#![warn(missing_docs)]

pub mod analyze;
pub mod ast;
pub mod diag;
pub mod diff;
pub mod exec;
pub mod export;
pub mod grad;
pub(crate) mod hash;
pub mod io;
pub mod ir;
pub mod lint;
pub mod parse;
pub mod plot;
pub mod print;
pub mod sema;
pub mod simplify;
pub mod span;
pub mod validate;

pub use diag::{Color, Diagnostic, Report, Severity};
pub use exec::{EvalError, Evaluator, Float, Inputs, Kernel, Output};
pub use sema::Checked;
pub use span::{SourceFile, Span};

use std::collections::BTreeMap;
use std::path::Path;

/// Everything that can go wrong when loading a spec.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read (missing, unreadable, a directory).
    #[error("cannot read `{path}`: {reason}")]
    Read {
        /// The path as given.
        path: String,
        /// What the operating system said, in words.
        reason: String,
    },
    /// The file is not UTF-8 text.
    #[error("`{path}` is not UTF-8 text: invalid byte at line {line}, column {col}")]
    NotUtf8 {
        /// The path as given.
        path: String,
        /// 1-based line of the first invalid byte.
        line: usize,
        /// 1-based column (in bytes) of the first invalid byte.
        col: usize,
    },
    /// The spec has errors; the report holds every one of them.
    #[error("{}", .0.render(Color::Never))]
    Spec(Box<Report>),
    /// Evaluation was refused: an input is missing, misshapen or outside
    /// its domain.
    #[error(transparent)]
    Eval(#[from] EvalError),
    /// A data file could not be read or written.
    #[error(transparent)]
    Data(#[from] io::DataError),
    /// A plot could not be drawn.
    #[error(transparent)]
    Plot(#[from] plot::PlotError),
    /// Validation could not run: bad data, options that do not fit the
    /// spec, or a value the evaluator refused while training.
    #[error(transparent)]
    Validate(#[from] validate::ValidateError),
}

impl Error {
    /// Renders the error for a terminal: diagnostics with their source
    /// excerpts, other errors as one `error: ...` line.
    pub fn render(&self, color: Color) -> String {
        match self {
            Error::Spec(r) => r.render(color),
            Error::Validate(v) => match v.hint() {
                Some(h) => format!("error: {v}\n  = hint: {h}\n"),
                None => format!("error: {v}\n"),
            },
            other => format!("error: {other}\n"),
        }
    }
}

/// A parsed and checked loss specification.
#[derive(Clone, Debug)]
pub struct Loss {
    file: SourceFile,
    checked: Checked,
    warnings: Vec<Diagnostic>,
    overrides: BTreeMap<String, f64>,
}

impl Loss {
    /// Reads, parses and checks a `.loss` file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Loss, Error> {
        Loss::from_file_with_params(path, &[])
    }

    /// Reads, parses and checks a `.loss` file with some params' values
    /// replaced (each checked against its declared range), all at once, so
    /// an override can stand in for a default that would not pass.
    pub fn from_file_with_params(
        path: impl AsRef<Path>,
        params: &[(String, f64)],
    ) -> Result<Loss, Error> {
        let path = path.as_ref();
        let shown = path.display().to_string();
        if path.is_dir() {
            return Err(Error::Read {
                path: shown,
                reason: "it is a directory, not a .loss file".into(),
            });
        }
        let meta = std::fs::metadata(path).map_err(|e| Error::Read {
            path: shown.clone(),
            reason: io_reason(&e),
        })?;
        if !meta.is_file() {
            return Err(Error::Read {
                path: shown,
                reason: "it is not a regular file".into(),
            });
        }
        if meta.len() > MAX_SPEC_BYTES {
            return Err(Error::Read {
                path: shown,
                reason: format!(
                    "it is {} bytes; a spec may be at most {MAX_SPEC_BYTES}",
                    meta.len()
                ),
            });
        }
        let bytes = std::fs::read(path).map_err(|e| Error::Read {
            path: shown.clone(),
            reason: io_reason(&e),
        })?;
        let text = String::from_utf8(bytes).map_err(|e| {
            let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
            let line = valid.iter().filter(|&&b| b == b'\n').count() + 1;
            let col =
                valid.len() - valid.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1) + 1;
            Error::NotUtf8 {
                path: shown.clone(),
                line,
                col,
            }
        })?;
        Loss::build(
            SourceFile::new(shown, text),
            params.iter().cloned().collect(),
        )
    }

    /// Parses and checks spec text (named `<source>` in messages).
    pub fn from_source(text: impl Into<String>) -> Result<Loss, Error> {
        Loss::from_named_source("<source>", text)
    }

    /// Parses and checks spec text, calling it `name` in messages.
    pub fn from_named_source(
        name: impl Into<String>,
        text: impl Into<String>,
    ) -> Result<Loss, Error> {
        Loss::build(SourceFile::new(name, text), BTreeMap::new())
    }

    /// The params overridden since the file was read, by name.
    pub fn overrides(&self) -> &BTreeMap<String, f64> {
        &self.overrides
    }

    /// The same spec with `name`'s value replaced, checked against the
    /// param's declared range like a default would be.
    pub fn with_param(&self, name: &str, value: f64) -> Result<Loss, Error> {
        let mut overrides = self.overrides.clone();
        overrides.insert(name.to_string(), value);
        Loss::build(self.file.clone(), overrides)
    }

    fn build(file: SourceFile, overrides: BTreeMap<String, f64>) -> Result<Loss, Error> {
        with_big_stack(move || {
            let fail = |file: &SourceFile, diagnostics| {
                Error::Spec(Box::new(Report {
                    file: file.clone(),
                    diagnostics,
                }))
            };
            let spec = parse::parse(file.text()).map_err(|d| fail(&file, d))?;
            let (checked, warnings) =
                sema::check_with(spec, file.text(), &overrides).map_err(|d| fail(&file, d))?;
            Ok(Loss {
                file,
                checked,
                warnings,
                overrides,
            })
        })
    }

    /// Derives the gradient of the objective with respect to every pred.
    ///
    /// A construct the derivation does not handle yet is reported as a
    /// located error (E0090), never a panic.
    pub fn derive(&self) -> Result<grad::Derivation, Error> {
        self.derive_with(|_, o| o)
    }

    /// Like [`Loss::derive`], after `hook` has rewritten the lowered
    /// objective: export puts a booster's link in front of a pred so the
    /// gradient through it is derived and simplified symbolically.
    pub fn derive_with(
        &self,
        mut hook: impl FnMut(&mut ir::Graph, ir::lower::Objective) -> ir::lower::Objective
        + Send
        + 'static,
    ) -> Result<grad::Derivation, Error> {
        let checked = self.checked.clone();
        with_big_stack(move || grad::derive_with(&checked, &mut hook)).map_err(|u| {
            let hint = if u.what.contains("mixing mean") {
                "use one kind of sample reduction: a sum is n times a mean".to_string()
            } else {
                "the spec itself is valid (lossc check accepts it); only this construct cannot be differentiated yet".to_string()
            };
            let d = Diagnostic::error("E0090", u.span, format!("cannot differentiate this spec: {u}"))
                .with_label("not supported by the derivation yet")
                .with_hint(hint);
            Error::Spec(Box::new(Report { file: self.file.clone(), diagnostics: vec![d] }))
        })
    }

    /// Compiles the spec into a fast evaluator of its value and gradients
    /// in `T` (`f32` or `f64`).
    pub fn compile<T: Float>(&self) -> Result<Evaluator<T>, Error> {
        self.compile_impl(false)
    }

    /// Like [`Loss::compile`], and the evaluator also computes the diagonal
    /// of the Hessian for every scalar pred (as gradient-boosting libraries
    /// need).
    pub fn compile_with_hessian<T: Float>(&self) -> Result<Evaluator<T>, Error> {
        self.compile_impl(true)
    }

    fn compile_impl<T: Float>(&self, hessian: bool) -> Result<Evaluator<T>, Error> {
        let derivation = self.derive()?;
        let checked = self.checked.clone();
        with_big_stack(move || Evaluator::new(derivation, &checked, hessian)).map_err(Error::Eval)
    }

    /// The property table of step 3 (see [`analyze`]): for every pred,
    /// differentiability, convexity, the gradient's shape, finiteness,
    /// calibration or the estimand, each with its evidence.
    pub fn analyze(&self) -> Result<analyze::Analysis, Error> {
        let d = self.derive()?;
        let me = self.clone();
        Ok(with_big_stack(move || analyze::analyze(&me, &d)))
    }

    /// Checks every `expect` against an analysis of this spec: an error
    /// (E0080) naming the property, the verdict and the evidence for each
    /// one the analysis contradicts. Expectations it cannot judge come back
    /// as warnings (W0080) in the `Ok` report.
    pub fn check_expects(&self, a: &analyze::Analysis) -> Result<Report, Error> {
        let diags = analyze::expect_diagnostics(&analyze::check_expects(&self.checked, a));
        let report = Report {
            file: self.file.clone(),
            diagnostics: diags,
        };
        if report.error_count() > 0 {
            return Err(Error::Spec(Box::new(report)));
        }
        Ok(report)
    }

    /// The lints of this spec (warnings with codes `L0001`..., see
    /// `docs/lints.md`), given its analysis and, optionally, the training
    /// data by `data` name (for the lints about outliers and rare classes).
    pub fn lint(
        &self,
        a: &analyze::Analysis,
        data: Option<&BTreeMap<String, ndarray::ArrayD<f64>>>,
    ) -> Result<Report, Error> {
        let d = self.derive()?;
        Ok(Report {
            file: self.file.clone(),
            diagnostics: lint::lints(self, &d, a, data),
        })
    }

    /// Rust source of a fused evaluator for this spec (the second backend):
    /// a module `module` whose `kernel::<T>()` is given to
    /// [`Evaluator::with_kernel`]. Batch-coupled passes (`@j`), and loops
    /// inside loops, are left to the interpreter.
    pub fn codegen(&self, module: &str) -> Result<String, Error> {
        let ev = self.compile::<f64>()?;
        Ok(ev.rust_source(module, self.file.name()))
    }

    /// The checked spec: name, task, declarations, expectations.
    pub fn checked(&self) -> &Checked {
        &self.checked
    }

    /// The warnings found while checking (the spec is valid regardless).
    pub fn warnings(&self) -> &[Diagnostic] {
        &self.warnings
    }

    /// The warnings as a renderable report.
    pub fn warning_report(&self) -> Report {
        Report {
            file: self.file.clone(),
            diagnostics: self.warnings.clone(),
        }
    }

    /// The source file the spec was read from.
    pub fn source(&self) -> &SourceFile {
        &self.file
    }
}

/// The largest spec file read (a spec is a page of text; this stops
/// `lossc check /dev/zero` from reading forever).
pub const MAX_SPEC_BYTES: u64 = 4 << 20;

/// Runs `f` on a thread with a large stack. Parsing, checking and
/// differentiation recurse over expression trees; their depth is limited,
/// but within the limits a hostile spec must not overflow a small stack.
fn with_big_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    const STACK: usize = 256 << 20;
    std::thread::Builder::new()
        .stack_size(STACK)
        .spawn(f)
        .expect("spawning a thread for the compiler")
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

pub(crate) fn io_reason(e: &std::io::Error) -> String {
    use std::io::ErrorKind::*;
    match e.kind() {
        NotFound => "no such file".into(),
        PermissionDenied => "permission denied".into(),
        IsADirectory => "it is a directory, not a .loss file".into(),
        _ => e.to_string(),
    }
}
