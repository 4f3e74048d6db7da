//! The user's data for `lossc validate`: a CSV or `.npz` file read once,
//! whose columns are converted to numbers only when a spec or `--features`
//! asks for them, so an unused text column (an id, a comment) is no error,
//! and every bad cell is reported where it is: `file:line:col` in a CSV,
//! array and row in an `.npz`.

use super::ValidateError;
use crate::io::DataError;
use crate::sema::types::{Dom, Size};
use ndarray::{Array2, ArrayD, Axis};
use std::collections::BTreeMap;
use std::path::Path;

/// A data set: named columns of equal length.
#[derive(Clone, Debug)]
pub struct Table {
    /// The file it came from (or a scenario's name), for messages.
    pub origin: String,
    source: Source,
}

#[derive(Clone, Debug)]
enum Source {
    /// CSV text: the header, then each record with its 1-based line.
    Csv {
        header: Vec<String>,
        records: Vec<(u64, csv::StringRecord)>,
    },
    /// Arrays by name, each `[n]` or `[n, C]` (also how scenarios hold their data).
    Arrays(BTreeMap<String, ArrayD<f64>>),
}

/// A column read as numbers: `[n, 1]` for a scalar, `[n, C]` for a vector.
#[derive(Clone, Debug)]
pub struct Column {
    /// The column's name in the file.
    pub name: String,
    /// The values, one row per example.
    pub values: Array2<f64>,
    /// Whether the source was one value per row.
    pub scalar: bool,
    /// Where each row is (`file:line` for CSV) and each component's CSV column.
    locs: Locs,
}

#[derive(Clone, Debug)]
enum Locs {
    Csv {
        path: String,
        lines: Vec<u64>,
        cols: Vec<usize>,
    },
    Array {
        path: String,
    },
}

impl Column {
    /// Where row `r`, component `c` came from, as a reader would look for it.
    pub fn locate(&self, r: usize, c: usize) -> String {
        match &self.locs {
            Locs::Csv { path, lines, cols } => format!("{path}:{}:{}", lines[r], cols[c]),
            Locs::Array { path } if self.scalar => {
                format!("{path}: array `{}`, row {r}", self.name)
            }
            Locs::Array { path } => {
                format!("{path}: array `{}`, row {r}, component {c}", self.name)
            }
        }
    }
}

impl Table {
    /// Reads a `.csv` or `.npz` file (by extension; anything else is read as CSV).
    pub fn read(path: impl AsRef<Path>) -> Result<Table, ValidateError> {
        let path = path.as_ref();
        let origin = path.display().to_string();
        if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("npz"))
        {
            let arrays = crate::io::read_npz_all::<f64>(path).map_err(data_err)?;
            return Table::from_arrays(origin, arrays);
        }
        let text = std::fs::read(path).map_err(|e| {
            data_err(DataError::Io {
                action: "read",
                path: origin.clone(),
                reason: crate::io_reason(&e),
            })
        })?;
        let mut rdr = csv::ReaderBuilder::new()
            .trim(csv::Trim::All)
            .from_reader(text.as_slice());
        let bad = |e: csv::Error| {
            let line = e.position().map_or(1, |p| p.line());
            ValidateError::Data {
                at: format!("{origin}:{line}"),
                reason: csv_reason(&e),
                hint: None,
            }
        };
        let header: Vec<String> = rdr
            .headers()
            .map_err(bad)?
            .iter()
            .map(String::from)
            .collect();
        if header.iter().all(|h| h.is_empty()) {
            return Err(ValidateError::Data {
                at: format!("{origin}:1"),
                reason: "the file is empty; lossc needs a header line naming the columns".into(),
                hint: None,
            });
        }
        let mut records = Vec::new();
        for rec in rdr.records() {
            let rec = rec.map_err(bad)?;
            let line = rec.position().map_or(0, |p| p.line());
            records.push((line, rec));
        }
        Ok(Table {
            origin,
            source: Source::Csv { header, records },
        })
    }

    /// A table of arrays (`[n]` or `[n, C]`) that must agree on `n`.
    pub fn from_arrays(
        origin: impl Into<String>,
        arrays: BTreeMap<String, ArrayD<f64>>,
    ) -> Result<Table, ValidateError> {
        let origin = origin.into();
        let mut first: Option<(&str, usize)> = None;
        for (name, a) in &arrays {
            if a.ndim() == 0 || a.ndim() > 2 {
                return Err(ValidateError::Data {
                    at: origin.clone(),
                    reason: format!(
                        "array `{name}` has shape {:?}; a column is one value per row ([n]) or one row per example ([n, C])",
                        a.shape()
                    ),
                    hint: None,
                });
            }
            let n = a.shape()[0];
            match first {
                None => first = Some((name, n)),
                Some((f, m)) if m != n => {
                    return Err(ValidateError::Data {
                        at: origin.clone(),
                        reason: format!("array `{name}` has {n} rows, but `{f}` has {m}"),
                        hint: None,
                    });
                }
                _ => {}
            }
        }
        Ok(Table {
            origin,
            source: Source::Arrays(arrays),
        })
    }

    /// Writes the table to `path`: an `.npz` keeps each array as it is; a
    /// `.csv` spreads a vector column over `name[0]`, `name[1]`, ..., as
    /// [`Table::read`] expects. How a scenario's data leaves lossc, to train
    /// other models (a booster with an exported objective) on the same rows.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), ValidateError> {
        let path = path.as_ref();
        let shown = path.display().to_string();
        let Source::Arrays(arrays) = &self.source else {
            return Err(ValidateError::Setup {
                reason: format!(
                    "`{}` is already a file; there is nothing to save",
                    self.origin
                ),
                hint: Some("--save-data writes a scenario's generated data".into()),
            });
        };
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        let written = match ext {
            "npz" => {
                let views: Vec<(String, ndarray::ArrayViewD<'_, f64>)> =
                    arrays.iter().map(|(k, v)| (k.clone(), v.view())).collect();
                crate::io::write_npz(path, &views)
            }
            "csv" => {
                let mut cols: Vec<(String, ArrayD<f64>)> = Vec::new();
                for (name, a) in arrays {
                    if a.ndim() == 1 {
                        cols.push((name.clone(), a.clone()));
                    } else {
                        for (c, col) in a.axis_iter(Axis(1)).enumerate() {
                            cols.push((format!("{name}[{c}]"), col.to_owned()));
                        }
                    }
                }
                let views: Vec<(String, ndarray::ArrayViewD<'_, f64>)> =
                    cols.iter().map(|(k, v)| (k.clone(), v.view())).collect();
                crate::io::write_csv(path, &views)
            }
            _ => {
                return Err(ValidateError::Setup {
                    reason: format!("cannot tell the format of `{shown}`"),
                    hint: Some("name the file .csv or .npz".into()),
                });
            }
        };
        written.map_err(|e| ValidateError::Setup {
            reason: e.to_string(),
            hint: None,
        })
    }

    /// The number of examples.
    pub fn rows(&self) -> usize {
        match &self.source {
            Source::Csv { records, .. } => records.len(),
            Source::Arrays(a) => a.values().next().map_or(0, |a| a.shape()[0]),
        }
    }

    /// The column names, in file order (a CSV's `y[0]`, `y[1]`, ... stay separate).
    pub fn names(&self) -> Vec<String> {
        match &self.source {
            Source::Csv { header, .. } => header.clone(),
            Source::Arrays(a) => a.keys().cloned().collect(),
        }
    }

    fn available(&self) -> String {
        let names = self.names();
        if names.is_empty() {
            "none".into()
        } else {
            names.join(", ")
        }
    }

    /// Column `name` as finite numbers. In a CSV a vector is stored as the
    /// columns `name[0]`, `name[1]`, ...; `purpose` says in the error what
    /// the column was wanted for.
    pub fn column(&self, name: &str, purpose: &str) -> Result<Column, ValidateError> {
        let col = match &self.source {
            Source::Arrays(arrays) => {
                let a = arrays
                    .get(name)
                    .ok_or_else(|| self.missing(name, purpose))?;
                let scalar = a.ndim() == 1;
                let values = if scalar {
                    a.clone().insert_axis(Axis(1))
                } else {
                    a.clone()
                }
                .into_dimensionality()
                .expect("checked to be 1-D or 2-D");
                Column {
                    name: name.to_string(),
                    values,
                    scalar,
                    locs: Locs::Array {
                        path: self.origin.clone(),
                    },
                }
            }
            Source::Csv { header, records } => {
                let idx: Vec<usize> = match header.iter().position(|h| h == name) {
                    Some(i) => vec![i],
                    None => {
                        let mut v = Vec::new();
                        while let Some(i) = header
                            .iter()
                            .position(|h| *h == format!("{name}[{}]", v.len()))
                        {
                            v.push(i);
                        }
                        if v.is_empty() {
                            return Err(self.missing(name, purpose));
                        }
                        v
                    }
                };
                let scalar = header.get(idx[0]).is_some_and(|h| h == name);
                let mut values = Array2::zeros((records.len(), idx.len()));
                for (r, (line, rec)) in records.iter().enumerate() {
                    for (c, &i) in idx.iter().enumerate() {
                        let cell = rec.get(i).unwrap_or("");
                        let at = format!("{}:{line}:{}", self.origin, i + 1);
                        if cell.is_empty() {
                            return Err(ValidateError::Data {
                                at,
                                reason: format!(
                                    "column `{}` ({purpose}): the cell is empty",
                                    header[i]
                                ),
                                hint: Some(
                                    "every row needs a number in every column lossc reads".into(),
                                ),
                            });
                        }
                        let v: f64 = cell.parse().map_err(|_| ValidateError::Data {
                            at: at.clone(),
                            reason: format!(
                                "column `{}` ({purpose}): `{cell}` is not a number",
                                header[i]
                            ),
                            hint: None,
                        })?;
                        values[[r, c]] = v;
                    }
                }
                Column {
                    name: name.to_string(),
                    values,
                    scalar,
                    locs: Locs::Csv {
                        path: self.origin.clone(),
                        lines: records.iter().map(|(l, _)| *l).collect(),
                        cols: idx.iter().map(|i| i + 1).collect(),
                    },
                }
            }
        };
        for ((r, c), &v) in col.values.indexed_iter() {
            if !v.is_finite() {
                return Err(ValidateError::Data {
                    at: col.locate(r, c),
                    reason: format!("column `{name}` ({purpose}): {v} is not a finite number"),
                    hint: Some("drop or impute missing values before validating".into()),
                });
            }
        }
        Ok(col)
    }

    fn missing(&self, name: &str, purpose: &str) -> ValidateError {
        ValidateError::Data {
            at: self.origin.clone(),
            reason: format!(
                "no column `{name}` ({purpose}); the file has: {}",
                self.available()
            ),
            hint: Some(match &self.source {
                Source::Csv { .. } => format!(
                    "name a column `{name}` (a vector as `{name}[0]`, `{name}[1]`, ...), or map another column with --map {name}=COLUMN"
                ),
                Source::Arrays(_) => {
                    format!("add an array `{name}`, or map another one with --map {name}=ARRAY")
                }
            }),
        }
    }
}

/// Checks a column against a declared input's domain and shape, naming
/// the first value outside it.
pub fn check_domain(
    col: &Column,
    what: &str,
    dom: &Dom,
    width: Option<&Size>,
) -> Result<(), ValidateError> {
    let fail = |r: usize, c: usize, why: String| ValidateError::Data {
        at: col.locate(r, c),
        reason: format!("column `{}` ({what}): {why}", col.name),
        hint: None,
    };
    let vector = width.is_some();
    if vector && col.scalar && col.values.ncols() == 1 && !matches!(width, Some(Size::Lit(1))) {
        return Err(ValidateError::Data {
            at: col.locate(0, 0),
            reason: format!(
                "column `{}` ({what}) has one value per row, but a vector is declared",
                col.name
            ),
            hint: Some(format!(
                "store it as columns `{0}[0]`, `{0}[1]`, ... (CSV) or an [n, C] array (npz)",
                col.name
            )),
        });
    }
    if !vector && col.values.ncols() != 1 {
        return Err(ValidateError::Data {
            at: col.locate(0, 0),
            reason: format!(
                "column `{}` ({what}) has {} values per row, but a scalar is declared",
                col.name,
                col.values.ncols()
            ),
            hint: None,
        });
    }
    if let Some(Size::Lit(n)) = width
        && col.values.ncols() as u64 != *n
    {
        return Err(ValidateError::Data {
            at: col.locate(0, 0),
            reason: format!(
                "column `{}` ({what}) has {} components, but the spec declares {n}",
                col.name,
                col.values.ncols()
            ),
            hint: None,
        });
    }
    for (r, row) in col.values.rows().into_iter().enumerate() {
        match dom {
            Dom::Labels(vs) => {
                for (c, &v) in row.iter().enumerate() {
                    if !vs.contains(&v) {
                        return Err(fail(
                            r,
                            c,
                            format!(
                                "{} is not one of the declared labels {}",
                                crate::analyze::num(v),
                                crate::sema::types::fmt_labels(vs)
                            ),
                        ));
                    }
                }
            }
            Dom::Range(range) => {
                for (c, &v) in row.iter().enumerate() {
                    if !range.contains(v) {
                        return Err(fail(
                            r,
                            c,
                            format!(
                                "{} is outside the declared range {range}",
                                crate::analyze::num(v)
                            ),
                        ));
                    }
                }
            }
            Dom::Class(_) => {
                let v = row[0];
                if v < 0.0 || v.fract() != 0.0 {
                    return Err(fail(
                        r,
                        0,
                        format!(
                            "{} is not a class index (an integer from 0)",
                            crate::analyze::num(v)
                        ),
                    ));
                }
            }
            Dom::Onehot | Dom::Multihot => {
                for (c, &v) in row.iter().enumerate() {
                    if v != 0.0 && v != 1.0 {
                        return Err(fail(
                            r,
                            c,
                            format!("{} is not 0 or 1", crate::analyze::num(v)),
                        ));
                    }
                }
                if matches!(dom, Dom::Onehot) && row.sum() != 1.0 {
                    return Err(fail(r, 0, "a onehot row needs exactly one 1".into()));
                }
            }
            Dom::Probs => {
                if row.iter().any(|&v| v < 0.0) || (row.sum() - 1.0).abs() > 1e-6 {
                    return Err(fail(
                        r,
                        0,
                        "the row is not a probability distribution (non-negative, summing to 1)"
                            .into(),
                    ));
                }
            }
            Dom::Unknown => {}
        }
    }
    Ok(())
}

fn csv_reason(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => {
            format!("this row has {len} fields, but the header has {expected_len}")
        }
        csv::ErrorKind::Utf8 { .. } => "the file is not UTF-8 text".into(),
        _ => e.to_string(),
    }
}

fn data_err(e: DataError) -> ValidateError {
    ValidateError::Data {
        at: match &e {
            DataError::Io { path, .. }
            | DataError::Npz { path, .. }
            | DataError::Missing { path, .. }
            | DataError::Dtype { path, .. }
            | DataError::Inexact { path, .. }
            | DataError::Csv { path, .. } => path.clone(),
        },
        reason: match &e {
            DataError::Io { reason, .. } => format!("cannot read it: {reason}"),
            other => other.to_string(),
        },
        hint: None,
    }
}
