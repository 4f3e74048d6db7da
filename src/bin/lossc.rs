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
    /// Print the prelude: the standard losses, written in the .loss language.
    Prelude,
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
        Command::Prelude => {
            print!("{}", lossc::sema::PRELUDE_SOURCE);
            ExitCode::SUCCESS
        }
    }
}

/// Loads a spec with param overrides applied.
fn load(path: &str, params: &[(String, f64)]) -> Result<Loss, lossc::Error> {
    Loss::from_file_with_params(path, params)
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
