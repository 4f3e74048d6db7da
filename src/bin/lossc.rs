//! The `lossc` command line: a thin shell over the library.

use clap::{Parser, Subcommand, ValueEnum};
use lossc::{Color, Loss};
use std::io::{IsTerminal, Write};
use std::process::ExitCode;

/// lossc compiles `.loss` files, declarative specs of machine-learning loss
/// functions: it checks them, and reports every problem with its location.
#[derive(Parser)]
#[command(name = "lossc", version, about, long_about = None)]
struct Cli {
    /// When to colour diagnostics.
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto, global = true)]
    color: ColorChoice,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum ColorChoice {
    /// Colour when standard error is a terminal and NO_COLOR is not set.
    Auto,
    /// Always emit ANSI colour codes.
    Always,
    /// Plain text.
    Never,
}

#[derive(Subcommand)]
enum Command {
    /// Parse and check specs; print a one-line summary of each valid one.
    ///
    /// Exits 0 when every spec is valid, 1 when any has an error (every
    /// error in every file is printed), 2 on a usage error. Warnings are
    /// printed but do not fail unless --deny-warnings is given.
    Check {
        /// The `.loss` files to check.
        #[arg(required = true, value_name = "SPEC")]
        specs: Vec<String>,
        /// Treat warnings as errors.
        #[arg(long)]
        deny_warnings: bool,
        /// Override a param's value (checked against its declared range).
        #[arg(long = "param", value_name = "NAME=VALUE", value_parser = parse_param)]
        params: Vec<(String, f64)>,
    },
    /// Derive the gradient of the objective with respect to every pred.
    ///
    /// For each pred prints the per-sample derivative dloss/dpred, simplified,
    /// and the reduction factor (1/n for a mean) separately; then the
    /// numerically stable forms evaluation uses.
    Grad {
        /// The `.loss` file.
        #[arg(value_name = "SPEC")]
        spec: String,
        /// Output notation.
        #[arg(long, value_enum, default_value_t = GradFormat::Text)]
        format: GradFormat,
        /// Also print the second derivative (the Hessian's diagonal).
        #[arg(long)]
        hessian: bool,
        /// Show the derivation step by step: the chain rule at each node,
        /// then each simplification.
        #[arg(long)]
        explain: bool,
        /// Override a param's value (checked against its declared range; the
        /// printed derivative keeps the param's name).
        #[arg(long = "param", value_name = "NAME=VALUE", value_parser = parse_param)]
        params: Vec<(String, f64)>,
    },
    /// Compare the symbolic gradient with central finite differences on
    /// random in-domain data; exit 1 if any pred's worst relative error is
    /// above the tolerance.
    Gradcheck {
        /// The `.loss` file.
        #[arg(value_name = "SPEC")]
        spec: String,
        /// Rows of random data.
        #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        rows: u32,
        /// Random seed (the same seed draws the same data).
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// The largest acceptable relative error.
        #[arg(long, default_value_t = 1e-6)]
        tolerance: f64,
        /// Override a param's value (checked against its declared range).
        #[arg(long = "param", value_name = "NAME=VALUE", value_parser = parse_param)]
        params: Vec<(String, f64)>,
    },
    /// Evaluate the objective and its gradients on arrays from a file.
    ///
    /// Reads every data and pred from the arrays of the same name in the
    /// .npz file (or the columns of the CSV file, for specs whose inputs are
    /// all scalars), checks each value against its declared domain, prints
    /// {"loss": VALUE} and writes each pred's gradient under the pred's name
    /// (and with --hessian, its Hessian diagonal as NAME_hessian) to --out.
    Eval {
        /// The `.loss` file.
        #[arg(value_name = "SPEC")]
        spec: String,
        /// Input arrays, one per data and pred, by name.
        #[arg(long, value_name = "IN.npz", required_unless_present_any = ["csv", "plan"], conflicts_with = "csv")]
        npz: Option<String>,
        /// Input columns (header = names), for specs whose inputs are all scalars.
        #[arg(long, value_name = "FILE.csv")]
        csv: Option<String>,
        /// Where to write the gradients: .npz, or .csv for scalar preds.
        #[arg(long, value_name = "OUT.npz")]
        out: Option<String>,
        /// Override a param's value (checked against its declared range).
        #[arg(long = "param", value_name = "NAME=VALUE", value_parser = parse_param)]
        params: Vec<(String, f64)>,
        /// Floating-point type of the evaluation.
        #[arg(long, value_enum, default_value_t = Dtype::F64)]
        dtype: Dtype,
        /// Worker threads (default: one per core). Results are the same bits
        /// whatever the count.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024))]
        threads: Option<u32>,
        /// Also write the Hessian's diagonal for scalar preds.
        #[arg(long)]
        hessian: bool,
        /// Print the compiled program (passes, loops, instructions) and exit.
        #[arg(long)]
        plan: bool,
    },
    /// Generate Rust source for a fused evaluator of the spec (the second
    /// backend): a module whose `kernel::<T>()` is passed to
    /// `Evaluator::with_kernel`. Batch-coupled passes stay on the interpreter.
    Codegen {
        /// The `.loss` file.
        #[arg(value_name = "SPEC")]
        spec: String,
        /// The module's name (default: the spec's `loss` name).
        #[arg(long)]
        module: Option<String>,
        /// Override a param's value (the generated code bakes params in).
        #[arg(long = "param", value_name = "NAME=VALUE", value_parser = parse_param)]
        params: Vec<(String, f64)>,
    },
    /// The property table of step 3: for every pred, differentiability,
    /// convexity, the gradient near the optimum and for large errors,
    /// finiteness, calibration or the estimand, with evidence; then every
    /// `expect` is checked (exit 1 when one fails).
    Analyze {
        /// The `.loss` file.
        #[arg(value_name = "SPEC")]
        spec: String,
        /// One JSON object instead of the table.
        #[arg(long)]
        json: bool,
        /// Training data (.csv or .npz with the spec's `data` columns), for
        /// the lints about outliers and rare classes.
        #[arg(long, value_name = "FILE")]
        data: Option<String>,
        /// Treat lints (and unverifiable expectations) as errors.
        #[arg(long)]
        deny_warnings: bool,
        /// Override a param's value.
        #[arg(long = "param", value_name = "NAME=VALUE", value_parser = parse_param)]
        params: Vec<(String, f64)>,
    },
    /// Plot the loss and its derivative against the pred, one column per
    /// label value, several specs overlaid (SVG).
    ///
    /// A spec may carry param overrides for its curve:
    /// `examples/focal_logits.loss:gamma=5` (several as `:a=1,b=2`).
    Plot {
        /// The `.loss` files, each optionally `FILE:NAME=VALUE,...`.
        #[arg(required = true, value_name = "SPEC")]
        specs: Vec<String>,
        /// The SVG file to write.
        #[arg(short = 'o', long = "output", value_name = "FILE.svg")]
        output: String,
    },
    /// Step 4: train a model with each loss and compare the task's metrics
    /// on held-out rows, one table row per spec.
    ///
    /// The data's columns are named after the spec's `data` inputs (or
    /// mapped with --map NAME=COL); a CSV stores a vector as `y[0]`,
    /// `y[1]`, .... Each pred gets its own model from the --features
    /// columns (`x*` takes every column starting with `x`; `--features
    /// q=a,b` gives pred q its own). Built-in scenarios need no files:
    /// moderation, xray, houses, multilabel, ranking.
    Validate(Box<ValidateArgs>),
    /// Write the spec as source for another tool: NumPy, JAX (a custom_vjp
    /// whose backward pass is lossc's gradient) or a LaTeX fragment.
    Export {
        /// The `.loss` file.
        #[arg(value_name = "SPEC")]
        spec: String,
        /// numpy, jax or latex.
        #[arg(long = "to", value_name = "TARGET")]
        to: String,
        /// Write here instead of standard output.
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: Option<String>,
        /// Override a param's default in the generated code.
        #[arg(long = "param", value_name = "NAME=VALUE", value_parser = parse_param)]
        params: Vec<(String, f64)>,
    },
    /// Print the prelude: the standard losses, written in the .loss language.
    Prelude,
}

/// Rust's reserved words, which cannot name a module.
const RUST_KEYWORDS: &[&str] = &[
    "as", "async", "await", "box", "break", "const", "continue", "crate", "dyn", "else", "enum",
    "extern", "false", "fn", "for", "gen", "if", "impl", "in", "let", "loop", "match", "mod",
    "move", "mut", "pub", "ref", "return", "self", "static", "struct", "super", "trait", "true",
    "try", "type", "unsafe", "use", "where", "while", "yield", "abstract", "become", "do", "final",
    "macro", "override", "priv", "typeof", "unsized", "virtual",
];

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Dtype {
    /// 32-bit floats.
    F32,
    /// 64-bit floats.
    F64,
}

#[derive(Clone, Copy, ValueEnum)]
enum GradFormat {
    /// Plain text: derivatives in .loss syntax, so they can be pasted back.
    Text,
    /// Unicode mathematics (σ, ∂, ·, superscripts, Greek letters).
    Unicode,
    /// LaTeX.
    Latex,
    /// One JSON object: per pred the derivative (text syntax), the factor,
    /// and the Hessian when asked.
    Json,
}

fn parse_param(s: &str) -> Result<(String, f64), String> {
    let (name, value) = s
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=VALUE, got `{s}`"))?;
    let value: f64 = value
        .trim()
        .parse()
        .map_err(|_| format!("`{}` is not a number", value.trim()))?;
    if !value.is_finite() {
        return Err(format!("`{s}`: the value must be finite"));
    }
    if name.trim().is_empty() {
        return Err(format!("`{s}`: the param name is missing"));
    }
    Ok((name.trim().to_string(), value))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let color = match cli.color {
        ColorChoice::Always => Color::Always,
        ColorChoice::Never => Color::Never,
        ColorChoice::Auto => {
            if std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none() {
                Color::Always
            } else {
                Color::Never
            }
        }
    };
    match cli.command {
        Command::Check {
            specs,
            deny_warnings,
            params,
        } => check(&specs, deny_warnings, &params, color),
        Command::Grad {
            spec,
            format,
            hessian,
            explain,
            params,
        } => {
            let format = match format {
                GradFormat::Text => lossc::grad::Format::Text,
                GradFormat::Unicode => lossc::grad::Format::Unicode,
                GradFormat::Latex => lossc::grad::Format::Latex,
                GradFormat::Json => lossc::grad::Format::Json,
            };
            let opts = lossc::grad::ReportOptions { hessian, explain };
            run(color, || {
                let loss = load(&spec, &params)?;
                let d = loss.derive()?;
                print!("{}", d.report(loss.checked(), format, opts));
                Ok(true)
            })
        }
        Command::Gradcheck {
            spec,
            rows,
            seed,
            tolerance,
            params,
        } => run(color, || {
            let loss = load(&spec, &params)?;
            let d = loss.derive()?;
            let mut rng = lossc::grad::Rng::new(seed);
            let data = lossc::grad::random_batch(loss.checked(), rows as usize, &mut rng);
            let mut ok = true;
            println!("{spec}: {rows} random rows, seed {seed}, tolerance {tolerance:e}");
            for r in d.gradcheck(&data) {
                let pass = r.worst <= tolerance;
                ok &= pass;
                println!(
                    "  {}: worst relative error {:.2e} at row {}{} (symbolic {:.6e}, finite differences {:.6e}) {}",
                    r.pred,
                    r.worst,
                    r.row,
                    r.component
                        .map_or(String::new(), |c| format!(", component {c}")),
                    r.symbolic,
                    r.numeric,
                    if pass { "ok" } else { "FAILED" }
                );
            }
            Ok(ok)
        }),
        Command::Eval {
            spec,
            npz,
            csv,
            out,
            params,
            dtype,
            threads,
            hessian,
            plan,
        } => run(color, || {
            let loss = load(&spec, &params)?;
            if !loss.warnings().is_empty() {
                eprint!("{}", loss.warning_report().render(color));
            }
            let opts = EvalOpts {
                npz,
                csv,
                out,
                threads,
                hessian,
                plan,
            };
            match dtype {
                Dtype::F32 => eval::<f32>(&loss, &opts),
                Dtype::F64 => eval::<f64>(&loss, &opts),
            }
        }),
        Command::Codegen {
            spec,
            module,
            params,
        } => run(color, || {
            let loss = load(&spec, &params)?;
            let name = module.unwrap_or_else(|| {
                let n = loss.checked().name.clone();
                if RUST_KEYWORDS.contains(&n.as_str()) {
                    format!("loss_{n}")
                } else {
                    n
                }
            });
            let ident = name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !ident || RUST_KEYWORDS.contains(&name.as_str()) {
                eprintln!(
                    "error: `{name}` is not a Rust module name (letters, digits and `_`, not a keyword)"
                );
                return Ok(false);
            }
            print!("{}", loss.codegen(&name)?);
            Ok(true)
        }),
        Command::Analyze {
            spec,
            json,
            data,
            deny_warnings,
            params,
        } => run(color, || {
            let loss = load(&spec, &params)?;
            let arrays = match &data {
                Some(path) => {
                    let wanted: Vec<(&str, bool)> = loss
                        .checked()
                        .data
                        .iter()
                        .map(|v| (v.name.as_str(), false))
                        .collect();
                    Some(if path.ends_with(".npz") {
                        lossc::io::read_npz::<f64>(path, &wanted)?
                    } else {
                        lossc::io::read_csv::<f64>(path, &wanted)?
                    })
                }
                None => None,
            };
            let a = loss.analyze()?;
            if json {
                println!("{}", a.json());
            } else {
                print!("{}", a.text());
            }
            let mut warnings = loss.check_expects(&a)?;
            warnings
                .diagnostics
                .extend(loss.lint(&a, arrays.as_ref())?.diagnostics);
            if !warnings.diagnostics.is_empty() {
                eprint!("{}", warnings.render(color));
                if deny_warnings {
                    let n = warnings.diagnostics.len();
                    eprintln!(
                        "error: {spec}: {n} warning{} denied by --deny-warnings",
                        if n == 1 { "" } else { "s" }
                    );
                    return Ok(false);
                }
            }
            Ok(true)
        }),
        Command::Plot { specs, output } => run(color, || {
            let mut curves = Vec::new();
            for arg in &specs {
                let Some((loss, label)) = load_labelled(arg, &[])? else {
                    return Ok(false);
                };
                curves.push(lossc::plot::Curve { loss, label });
            }
            lossc::plot::plot(&curves, &output)?;
            eprintln!("wrote {output}");
            Ok(true)
        }),
        Command::Validate(args) => run(color, || validate(*args)),
        Command::Export {
            spec,
            to,
            output,
            params,
        } => run(color, || {
            let target = match lossc::export::Target::parse(&to) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("error: --to: {e}");
                    return Ok(false);
                }
            };
            let loss = load(&spec, &params)?;
            let text = lossc::export::export(&loss, target, &spec)?;
            match &output {
                Some(path) => {
                    if let Err(e) = std::fs::write(path, &text) {
                        eprintln!("error: cannot write `{path}`: {e}");
                        return Ok(false);
                    }
                    eprintln!("wrote {path}");
                }
                None => print!("{text}"),
            }
            Ok(true)
        }),
        Command::Prelude => {
            print!("{}", lossc::sema::PRELUDE_SOURCE);
            ExitCode::SUCCESS
        }
    }
}

struct EvalOpts {
    npz: Option<String>,
    csv: Option<String>,
    out: Option<String>,
    threads: Option<u32>,
    hessian: bool,
    plan: bool,
}

/// `lossc eval`: read, validate, evaluate, print the loss, write gradients.
fn eval<T>(loss: &Loss, o: &EvalOpts) -> Result<bool, lossc::Error>
where
    T: lossc::Float + ndarray_npy::WritableElement,
{
    let mut ev = if o.hessian {
        loss.compile_with_hessian::<T>()?
    } else {
        loss.compile::<T>()?
    };
    if o.plan {
        print!("{}", ev.describe());
        return Ok(true);
    }
    if let Some(t) = o.threads {
        ev = ev.with_threads(t as usize)?;
    }
    let c = loss.checked();
    let wanted: Vec<(&str, bool)> = c
        .data
        .iter()
        .map(|v| (v.name.as_str(), false))
        .chain(c.preds.iter().map(|v| (v.name.as_str(), true)))
        .collect();
    let arrays = match (&o.npz, &o.csv) {
        (Some(p), _) => lossc::io::read_npz::<T>(p, &wanted)?,
        (None, Some(p)) => {
            if let Some(v) = c
                .data
                .iter()
                .chain(&c.preds)
                .find(|v| !matches!(v.shape, lossc::sema::types::Shape::Scalar))
            {
                return Err(lossc::io::DataError::Csv {
                    path: p.clone(),
                    line: 1,
                    reason: format!(
                        "`{}` is a {}, and a CSV column holds one number per row; use --npz",
                        v.name, v.type_text
                    ),
                }
                .into());
            }
            lossc::io::read_csv::<T>(p, &wanted)?
        }
        (None, None) => unreachable!("clap requires --npz or --csv"),
    };
    let mut inputs = lossc::Inputs::new();
    for (name, a) in &arrays {
        inputs.insert(name.clone(), a.view());
    }
    let result = ev.eval(&inputs)?;
    let value = result.loss().f64();
    if let Some(path) = &o.out {
        let mut outs: Vec<(String, ndarray::ArrayViewD<'_, T>)> =
            result.grads().map(|(n, a)| (n.to_string(), a)).collect();
        outs.extend(result.hessians().map(|(n, a)| (format!("{n}_hessian"), a)));
        if path.ends_with(".csv") {
            if let Some((n, _)) = outs.iter().find(|(_, a)| a.ndim() != 1) {
                return Err(lossc::io::DataError::Csv {
                    path: path.clone(),
                    line: 1,
                    reason: format!(
                        "the gradient `{n}` is not one number per row; write it to an .npz file"
                    ),
                }
                .into());
            }
            lossc::io::write_csv(path, &outs)?;
        } else {
            lossc::io::write_npz(path, &outs)?;
        }
    }
    if value.is_finite() {
        println!("{{\"loss\": {}}}", json_number(value));
        Ok(true)
    } else {
        println!("{{\"loss\": null}}");
        eprintln!(
            "error: the loss is {value} on these inputs (every input is inside its domain; the spec itself overflows)"
        );
        Ok(false)
    }
}

/// A float as JSON: the shortest text that reads back to the same value.
fn json_number(v: f64) -> String {
    format!("{v:?}")
}

/// Loads a spec with param overrides applied.
fn load(path: &str, params: &[(String, f64)]) -> Result<Loss, lossc::Error> {
    Loss::from_file_with_params(path, params)
}

/// Loads `FILE.loss` or `FILE.loss:NAME=V,...` (plus `extra` overrides) and
/// names it by the spec's name and its overrides, as tables and legends
/// show it; None (after printing why) when an override does not parse.
fn load_labelled(
    arg: &str,
    extra: &[(String, f64)],
) -> Result<Option<(Loss, String)>, lossc::Error> {
    let (path, overrides) = match arg.split_once(".loss:") {
        Some((p, o)) => (format!("{p}.loss"), Some(o)),
        None => (arg.to_string(), None),
    };
    let mut params = extra.to_vec();
    for o in overrides.into_iter().flat_map(|o| o.split(',')) {
        match parse_param(o) {
            Ok(p) => params.push(p),
            Err(e) => {
                eprintln!("error: `{arg}`: {e}");
                return Ok(None);
            }
        }
    }
    let loss = load(&path, &params)?;
    let mut label = loss.checked().name.clone();
    for (k, v) in &params {
        label.push_str(&format!(" {k}={v}"));
    }
    Ok(Some((loss, label)))
}

/// Parses `NAME=COLUMN`.
fn parse_map(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() && !v.trim().is_empty() => {
            Ok((k.trim().to_string(), v.trim().to_string()))
        }
        _ => Err(format!("`{s}` is not NAME=COLUMN")),
    }
}

/// Parses `NAME=N` for a size.
fn parse_size(s: &str) -> Result<(String, usize), String> {
    let (k, v) = parse_map(s)?;
    match v.parse::<usize>() {
        Ok(n) if n >= 1 => Ok((k, n)),
        _ => Err(format!("`{v}` is not a positive size")),
    }
}

/// Parses `COL>=VALUE`.
fn parse_slice(s: &str) -> Result<(String, f64), String> {
    match s.split_once(">=") {
        Some((c, v)) if !c.trim().is_empty() => match v.trim().parse::<f64>() {
            Ok(v) if v.is_finite() => Ok((c.trim().to_string(), v)),
            _ => Err(format!("`{v}` is not a number")),
        },
        _ => Err(format!("`{s}` is not COLUMN>=VALUE (e.g. severity>=7)")),
    }
}

/// The options of `lossc validate`.
#[derive(clap::Args)]
struct ValidateArgs {
    /// The `.loss` file (optionally `FILE.loss:NAME=VALUE,...`).
    #[arg(value_name = "SPEC")]
    spec: Option<String>,
    /// Another loss to compare, in the same table (repeatable).
    #[arg(long = "baseline", value_name = "OTHER.loss")]
    baselines: Vec<String>,
    /// The data: a .csv with a header line, or an .npz.
    #[arg(long, value_name = "FILE")]
    data: Option<String>,
    /// Feature columns, comma-separated (repeatable; `PRED=COL,...` for one pred).
    #[arg(long, value_name = "COL,COL,...")]
    features: Vec<String>,
    /// Read the spec input NAME from column COL.
    #[arg(long = "map", value_name = "NAME=COL", value_parser = parse_map)]
    map: Vec<(String, String)>,
    /// Run a built-in scenario instead of a spec and a file.
    #[arg(long, value_name = "NAME")]
    scenario: Option<String>,
    /// With --scenario: write its data to FILE (.csv or .npz) and stop.
    #[arg(long, value_name = "FILE", requires = "scenario")]
    save_data: Option<String>,
    /// `linear` (default) or `mlp:H`, one hidden layer of H tanh units.
    #[arg(long, value_name = "MODEL")]
    model: Option<String>,
    /// `lbfgs` (default), `adam` or `adam:LR`.
    #[arg(long, value_name = "NAME")]
    optimizer: Option<String>,
    /// Mini-batch rows for Adam (default: every row in each step).
    #[arg(long, value_name = "ROWS", value_parser = clap::value_parser!(u64).range(1..))]
    batch: Option<u64>,
    /// The most epochs (default 300).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    epochs: Option<u64>,
    /// Converged when an epoch improves the objective by less than this, relatively (default 1e-9).
    #[arg(long, value_name = "REL")]
    tol: Option<f64>,
    /// L2 penalty on the weights (default 1e-4).
    #[arg(long, value_name = "LAMBDA")]
    l2: Option<f64>,
    /// Share of rows (ranking: of queries) held out for testing (default 0.3).
    #[arg(long, value_name = "FRACTION")]
    test_fraction: Option<f64>,
    /// Seeds the split, the initial weights and the batches (default 0).
    #[arg(long)]
    seed: Option<u64>,
    /// The data input the metrics score (default: chosen by the task).
    #[arg(long, value_name = "NAME")]
    target: Option<String>,
    /// Ranking: the column grouping rows into queries (default: `query`, `qid` or `group`).
    #[arg(long, value_name = "COL")]
    group: Option<String>,
    /// Binary: also report recall and misses on rows with COL >= VALUE.
    #[arg(long, value_name = "COL>=VALUE", value_parser = parse_slice)]
    slice: Option<(String, f64)>,
    /// A size no data binds, e.g. an embedding's D=32.
    #[arg(long = "size", value_name = "NAME=N", value_parser = parse_size)]
    sizes: Vec<(String, usize)>,
    /// One JSON object instead of the table.
    #[arg(long)]
    json: bool,
    /// Also write an HTML report: the table, training curves and (binary)
    /// the reliability diagram and precision-recall curve.
    #[arg(long, value_name = "FILE.html")]
    report: Option<String>,
    /// Override a param of SPEC.
    #[arg(long = "param", value_name = "NAME=VALUE", value_parser = parse_param)]
    params: Vec<(String, f64)>,
}

fn validate(a: ValidateArgs) -> Result<bool, lossc::Error> {
    use lossc::validate::{
        Candidate, Options, Table, ValidateError, model::ModelKind, optim::Optimizer, scenario,
    };
    let usage = |reason: String, hint: Option<&str>| -> lossc::Error {
        ValidateError::Setup {
            reason,
            hint: hint.map(String::from),
        }
        .into()
    };
    let (mut opts, table, cands, title, sc) = match (&a.scenario, &a.spec) {
        (Some(name), None) => {
            if a.data.is_some()
                || !a.baselines.is_empty()
                || !a.features.is_empty()
                || !a.params.is_empty()
                || !a.map.is_empty()
            {
                return Err(usage(
                    "--scenario brings its own data, specs and features".into(),
                    Some(
                        "drop --data, --baseline, --features, --map and --param, or give a SPEC instead of --scenario",
                    ),
                ));
            }
            let s = scenario::scenario(name, a.seed.unwrap_or(0))?;
            if let Some(path) = &a.save_data {
                s.table.save(path)?;
                eprintln!("wrote {path} ({} rows)", s.table.rows());
                return Ok(true);
            }
            (
                s.options.clone(),
                s.table.clone(),
                s.candidates.clone(),
                format!("lossc validate --scenario {name}"),
                Some(s),
            )
        }
        (Some(_), Some(_)) => {
            return Err(usage("give a SPEC or --scenario, not both".into(), None));
        }
        (None, None) => {
            return Err(usage(
                "nothing to validate".into(),
                Some(&format!(
                    "give a SPEC with --data and --features, or --scenario NAME ({})",
                    scenario::NAMES.join(", ")
                )),
            ));
        }
        (None, Some(spec)) => {
            let Some(data) = &a.data else {
                return Err(usage(
                    "no data".into(),
                    Some("give --data FILE (.csv or .npz), or use --scenario NAME"),
                ));
            };
            let mut cands = Vec::new();
            for (k, arg) in std::iter::once(spec).chain(&a.baselines).enumerate() {
                let extra = if k == 0 { a.params.as_slice() } else { &[] };
                let Some((loss, label)) = load_labelled(arg, extra)? else {
                    return Ok(false);
                };
                cands.push(Candidate { label, loss });
            }
            let mut opts = Options::default();
            for f in &a.features {
                match f.split_once('=') {
                    Some((pred, cols)) if !pred.contains(',') => {
                        opts.pred_features.insert(
                            pred.to_string(),
                            cols.split(',').map(String::from).collect(),
                        );
                    }
                    _ => opts.features.extend(f.split(',').map(String::from)),
                }
            }
            opts.map = a.map.iter().cloned().collect();
            let table = Table::read(data)?;
            (opts, table, cands, format!("lossc validate {spec}"), None)
        }
    };
    if let Some(m) = &a.model {
        opts.model = ModelKind::parse(m).map_err(|e| usage(format!("--model: {e}"), None))?;
    }
    if a.optimizer.is_some() || a.batch.is_some() {
        let o = a
            .optimizer
            .as_deref()
            .unwrap_or(if a.batch.is_some() { "adam" } else { "lbfgs" });
        opts.optimizer = Optimizer::parse(o, a.batch.map(|b| b as usize))
            .map_err(|e| usage(format!("--optimizer: {e}"), None))?;
    }
    if let Some(e) = a.epochs {
        opts.epochs = e as usize;
    }
    if let Some(t) = a.tol {
        opts.tol = t;
    }
    if let Some(l) = a.l2 {
        opts.l2 = l;
    }
    if let Some(t) = a.test_fraction {
        opts.test_fraction = t;
    }
    if let Some(s) = a.seed {
        opts.seed = s;
    }
    if a.target.is_some() {
        opts.target = a.target.clone();
    }
    if a.group.is_some() {
        opts.group = a.group.clone();
    }
    if a.slice.is_some() {
        opts.slice = a.slice.clone();
    }
    opts.sizes.extend(a.sizes.iter().cloned());
    opts.progress = !a.json && std::io::stderr().is_terminal();
    let v = match &sc {
        Some(s) => {
            let mut s2 = scenario::scenario(s.name, opts.seed)?;
            s2.options = opts;
            s2.run()?
        }
        None => lossc::validate::validate(&cands, &table, &opts)?,
    };
    if a.json {
        println!("{}", v.json());
    } else {
        print!("{}", v.table());
    }
    if let Some(path) = &a.report {
        let html = v.html(&title).map_err(|e| usage(e, None))?;
        std::fs::write(path, html)
            .map_err(|e| usage(format!("cannot write `{path}`: {e}"), None))?;
        eprintln!("wrote {path}");
    }
    Ok(true)
}

/// Runs a command body: prints a library error with its diagnostics and
/// maps success (`true`), a failed check (`false`) and errors to exit codes.
fn run(color: Color, body: impl FnOnce() -> Result<bool, lossc::Error>) -> ExitCode {
    match body() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprint!("{}", e.render(color));
            ExitCode::FAILURE
        }
    }
}

fn check(
    specs: &[String],
    deny_warnings: bool,
    params: &[(String, f64)],
    color: Color,
) -> ExitCode {
    let mut failed = 0;
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    for path in specs {
        let loaded = load(path, params);
        match loaded {
            Ok(loss) => {
                let warnings = loss.warnings();
                if !warnings.is_empty() {
                    let _ = write!(stderr.lock(), "{}", loss.warning_report().render(color));
                }
                // Every `expect` is checked against the analysis.
                match loss.analyze().and_then(|a| loss.check_expects(&a)) {
                    Err(e) => {
                        failed += 1;
                        let _ = write!(stderr.lock(), "{}", e.render(color));
                        continue;
                    }
                    Ok(w) if !w.diagnostics.is_empty() => {
                        let _ = write!(stderr.lock(), "{}", w.render(color));
                    }
                    Ok(_) => {}
                }
                if deny_warnings && !warnings.is_empty() {
                    failed += 1;
                    let _ = writeln!(
                        stderr.lock(),
                        "error: {path}: {} warning{} denied by --deny-warnings",
                        warnings.len(),
                        if warnings.len() == 1 { "" } else { "s" }
                    );
                } else {
                    let _ = writeln!(stdout.lock(), "{path}: ok · {}", loss.checked().summary());
                }
            }
            Err(e) => {
                failed += 1;
                let _ = write!(stderr.lock(), "{}", e.render(color));
                if let lossc::Error::Spec(report) = &e {
                    let n = report.error_count();
                    let _ = writeln!(
                        stderr.lock(),
                        "error: {path}: {n} error{}",
                        if n == 1 { "" } else { "s" }
                    );
                }
            }
        }
    }
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
