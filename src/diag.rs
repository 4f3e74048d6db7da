//! Diagnostics as data, and their rendering.
//!
//! Every stage reports problems as [`Diagnostic`] values: a stable code, a
//! one-line message, the span it is about, secondary labels and hints. They
//! are collected, not thrown, so one run reports every error in a file.
//! Rendering (source excerpt, underline, colour) is separate and done by
//! codespan-reporting, so the library never prints.

use crate::span::{SourceFile, Span};
use codespan_reporting::diagnostic as cs;
use codespan_reporting::files::SimpleFile;
use codespan_reporting::term;
use std::fmt;

/// How bad a diagnostic is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// Suspicious but valid; fails only under `--deny-warnings`.
    Warning,
    /// The spec cannot be compiled.
    Error,
}

/// One problem found in a source file.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// A stable code such as `E0101`, documented in `docs/diagnostics.md`.
    pub code: &'static str,
    /// One line, lower case, no trailing period.
    pub message: String,
    /// What the diagnostic is about; `None` for a problem with the file as a whole.
    pub span: Option<Span>,
    /// A short text under the primary underline.
    pub label: String,
    /// Other places worth seeing (a first definition, a call site).
    pub secondary: Vec<(Span, String)>,
    /// Suggestions that help fix the problem.
    pub hints: Vec<String>,
}

impl Diagnostic {
    /// An error with `code` and `message` at `span`.
    pub fn error(
        code: &'static str,
        span: impl Into<Option<Span>>,
        message: impl Into<String>,
    ) -> Self {
        Diagnostic {
            severity: Severity::Error,
            code,
            message: message.into(),
            span: span.into(),
            label: String::new(),
            secondary: Vec::new(),
            hints: Vec::new(),
        }
    }

    /// A warning with `code` and `message` at `span`.
    pub fn warning(
        code: &'static str,
        span: impl Into<Option<Span>>,
        message: impl Into<String>,
    ) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(code, span, message)
        }
    }

    /// Sets the text under the primary underline.
    pub fn with_label(mut self, label: impl Into<String>) -> Self {
        self.label = label.into();
        self
    }

    /// Adds a secondary labelled span.
    pub fn with_secondary(mut self, span: Span, label: impl Into<String>) -> Self {
        self.secondary.push((span, label.into()));
        self
    }

    /// Adds a hint line.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hints.push(hint.into());
        self
    }

    /// Adds a hint when there is one.
    pub fn with_hint_opt(self, hint: Option<String>) -> Self {
        match hint {
            Some(h) => self.with_hint(h),
            None => self,
        }
    }

    /// True for errors (not warnings).
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// Whether rendered diagnostics use ANSI colours.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Color {
    /// Plain text: the form used in tests and when output is not a terminal.
    #[default]
    Never,
    /// ANSI colour escapes.
    Always,
}

/// Renders `diags` against `file` the way a compiler prints them: a header
/// with the code and message, `file:line:col`, the source line with the span
/// underlined, then the hints.
pub fn render(file: &SourceFile, diags: &[Diagnostic], color: Color) -> String {
    let files = SimpleFile::new(file.name(), file.text());
    let config = term::Config::default();
    let mut out = String::new();
    for d in diags {
        let cs = to_codespan(d, file.text().len());
        let rendered = match color {
            Color::Never => term::emit_into_string(&config, &files, &cs).ok(),
            Color::Always => {
                let mut buf = term::termcolor::Buffer::ansi();
                term::emit_to_write_style(&mut buf, &config, &files, &cs)
                    .ok()
                    .map(|_| String::from_utf8_lossy(buf.as_slice()).into_owned())
            }
        };
        // The renderer can only fail on spans outside the file; fall back to a
        // plain located line rather than losing the message.
        out.push_str(&rendered.unwrap_or_else(|| fallback(file, d)));
    }
    out
}

fn to_codespan(d: &Diagnostic, len: usize) -> cs::Diagnostic<()> {
    let clamp = |s: Span| s.start.min(len)..s.end.min(len).max(s.start.min(len));
    let mut labels = Vec::new();
    if let Some(span) = d.span {
        labels.push(cs::Label::primary((), clamp(span)).with_message(&d.label));
    }
    for (span, msg) in &d.secondary {
        labels.push(cs::Label::secondary((), clamp(*span)).with_message(msg));
    }
    let severity = match d.severity {
        Severity::Error => cs::Severity::Error,
        Severity::Warning => cs::Severity::Warning,
    };
    cs::Diagnostic::new(severity)
        .with_code(d.code)
        .with_message(&d.message)
        .with_labels(labels)
        .with_notes(d.hints.iter().map(|h| format!("hint: {h}")).collect())
}

fn fallback(file: &SourceFile, d: &Diagnostic) -> String {
    let (line, col) = d.span.map_or((1, 1), |s| file.line_col(s.start));
    format!("{}:{}:{}: {}\n", file.name(), line, col, ShortDiag(d))
}

struct ShortDiag<'a>(&'a Diagnostic);

impl fmt::Display for ShortDiag<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.0.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{kind}[{}]: {}", self.0.code, self.0.message)
    }
}

/// The diagnostics of one source file, rendered on demand.
///
/// This is what [`crate::Error::Spec`] carries: enough to print the full,
/// located report without the caller keeping the source around.
#[derive(Clone, Debug)]
pub struct Report {
    /// The file the diagnostics are about.
    pub file: SourceFile,
    /// Every diagnostic, errors and warnings, in source order.
    pub diagnostics: Vec<Diagnostic>,
}

impl Report {
    /// Renders every diagnostic.
    pub fn render(&self, color: Color) -> String {
        render(&self.file, &self.diagnostics, color)
    }

    /// The number of errors (warnings not counted).
    pub fn error_count(&self) -> usize {
        self.diagnostics.iter().filter(|d| d.is_error()).count()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render(Color::Never))
    }
}

/// Edit distance with adjacent transpositions (optimal string alignment),
/// for "did you mean" hints: `detla` is one edit from `delta`, as a reader
/// would count it.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

/// The closest of `candidates` to `name`, if close enough to be a likely typo.
pub fn did_you_mean<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let len = name.chars().count();
    let limit = (len / 3).max(1);
    // Long names are not typos of each other; comparing them is quadratic.
    if len > 64 {
        return None;
    }
    candidates
        .into_iter()
        .filter(|c| *c != name && c.chars().count().abs_diff(len) <= limit)
        .map(|c| (edit_distance(name, c), c))
        .filter(|(d, _)| *d <= limit)
        .min()
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_counts_single_edits() {
        assert_eq!(edit_distance("sigmoid", "sigmiod"), 1);
        assert_eq!(edit_distance("detla", "delta"), 1);
        assert_eq!(edit_distance("bce", "bce_logits"), 7);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    #[test]
    fn did_you_mean_picks_the_closest_plausible_name() {
        let names = ["sigmoid", "softplus", "softmax"];
        assert_eq!(did_you_mean("sigmoud", names), Some("sigmoid"));
        assert_eq!(did_you_mean("softmx", names), Some("softmax"));
        assert_eq!(did_you_mean("xyz", names), None);
    }

    #[test]
    fn spans_past_the_end_still_render() {
        let f = SourceFile::new("t.loss", "loss x\n");
        let d = Diagnostic::error("X0001", Span::new(50, 60), "boom");
        let out = render(&f, &[d], Color::Never);
        assert!(out.contains("boom"), "{out}");
    }
}
