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
    /// Print the prelude: the standard losses, written in the .loss language.
    Prelude,
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
        Command::Prelude => {
            print!("{}", lossc::sema::PRELUDE_SOURCE);
            ExitCode::SUCCESS
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
        let loaded = Loss::from_file(path)
            .and_then(|l| params.iter().try_fold(l, |l, (n, v)| l.with_param(n, *v)));
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
