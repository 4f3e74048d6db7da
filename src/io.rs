//! Reading inputs from `.npz` and CSV files and writing results to `.npz`
//! and CSV, for `lossc eval` and for programs that keep their data in files.
//!
//! Arrays are converted to the evaluation type on the way in: floats of
//! either width, integers (class indices, labels) and booleans are
//! accepted, as long as each value is represented exactly by a float of
//! the evaluation type (an integer above 2^24 is refused in f32).

use crate::exec::Float;
use ndarray::{ArrayD, IxDyn, OwnedRepr};
use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;

/// Why a data file could not be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DataError {
    /// The file could not be opened, read or written.
    #[error("cannot {action} `{path}`: {reason}")]
    Io {
        /// `read` or `write`.
        action: &'static str,
        /// The path.
        path: String,
        /// What the system said.
        reason: String,
    },
    /// The file is not a valid `.npz` archive or one of its arrays is not a
    /// valid `.npy` file.
    #[error("`{path}` is not a valid .npz file: {reason}")]
    Npz {
        /// The path.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// An input the spec declares is not in the file.
    #[error("`{path}` has no array `{name}` (for {kind} `{name}`); it has: {available}")]
    Missing {
        /// The path.
        path: String,
        /// The declared name.
        name: String,
        /// `data` or `pred`.
        kind: &'static str,
        /// The arrays in the file.
        available: String,
    },
    /// An array of a type that is not numbers.
    #[error(
        "array `{name}` in `{path}` has dtype {dtype}; lossc reads floats, integers and booleans"
    )]
    Dtype {
        /// The path.
        path: String,
        /// The array.
        name: String,
        /// The dtype as NumPy writes it.
        dtype: String,
    },
    /// An integer that the evaluation type cannot hold exactly.
    #[error(
        "array `{name}` in `{path}`: {value} at index {index} is not exactly representable in {ty}"
    )]
    Inexact {
        /// The path.
        path: String,
        /// The array.
        name: String,
        /// The flat index.
        index: usize,
        /// The value.
        value: String,
        /// `f32` or `f64`.
        ty: &'static str,
    },
    /// A CSV problem, with its line (1-based, the header is line 1).
    #[error("{path}:{line}: {reason}")]
    Csv {
        /// The path.
        path: String,
        /// The line.
        line: u64,
        /// What is wrong.
        reason: String,
    },
}

fn io_err(action: &'static str, path: &Path, e: impl std::fmt::Display) -> DataError {
    DataError::Io {
        action,
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

/// Opens a data file for reading, refusing a directory by name.
fn open(path: &Path) -> Result<File, DataError> {
    let file = File::open(path).map_err(|e| io_err("read", path, crate::io_reason(&e)))?;
    if file.metadata().is_ok_and(|m| m.is_dir()) {
        return Err(io_err("read", path, "it is a directory"));
    }
    Ok(file)
}

/// A declared input: its name and whether it is a pred.
pub type Wanted<'a> = (&'a str, bool);

/// Opens an `.npz` archive: the reader, its array names, the path as shown.
fn open_npz(path: &Path) -> Result<(ndarray_npy::NpzReader<File>, Vec<String>, String), DataError> {
    let shown = path.display().to_string();
    let npz_err = |e: ndarray_npy::ReadNpzError| DataError::Npz {
        path: shown.clone(),
        reason: e.to_string(),
    };
    let mut npz = ndarray_npy::NpzReader::new(open(path)?).map_err(npz_err)?;
    let names = npz.names().map_err(npz_err)?;
    Ok((npz, names, shown))
}

/// Reads the named arrays from an `.npz` file, converted to `T`.
pub fn read_npz<T: Float>(
    path: impl AsRef<Path>,
    wanted: &[Wanted<'_>],
) -> Result<BTreeMap<String, ArrayD<T>>, DataError> {
    let (mut npz, names, shown) = open_npz(path.as_ref())?;
    let mut out = BTreeMap::new();
    for &(name, is_pred) in wanted {
        if !names.iter().any(|n| n == name) {
            return Err(DataError::Missing {
                path: shown.clone(),
                name: name.to_string(),
                kind: if is_pred { "pred" } else { "data" },
                available: if names.is_empty() {
                    "no arrays".into()
                } else {
                    names.join(", ")
                },
            });
        }
        out.insert(name.to_string(), read_array::<T>(&mut npz, name, &shown)?);
    }
    Ok(out)
}

/// Reads every array of an `.npz` file, converted to `T`, by name.
pub fn read_npz_all<T: Float>(
    path: impl AsRef<Path>,
) -> Result<BTreeMap<String, ArrayD<T>>, DataError> {
    let (mut npz, names, shown) = open_npz(path.as_ref())?;
    let mut out = BTreeMap::new();
    for name in names {
        let a = read_array::<T>(&mut npz, &name, &shown)?;
        out.insert(name, a);
    }
    Ok(out)
}

/// Reads one array whatever its numeric dtype.
#[allow(unused_assignments)] // each failed attempt overwrites the last dtype seen
fn read_array<T: Float>(
    npz: &mut ndarray_npy::NpzReader<File>,
    name: &str,
    path: &str,
) -> Result<ArrayD<T>, DataError> {
    use ndarray_npy::{ReadNpyError, ReadNpzError};
    macro_rules! attempt {
        ($($ty:ty => $int:literal $conv:expr),* $(,)?) => {{
            let mut last = None;
            $(
                match npz.by_name::<OwnedRepr<$ty>, IxDyn>(name) {
                    Ok(a) => return convert(a, $conv, $int, name, path),
                    Err(ReadNpzError::Npy(ReadNpyError::WrongDescriptor(d))) => last = Some(d.to_string()),
                    Err(e) => return Err(DataError::Npz { path: path.to_string(), reason: format!("array `{name}`: {e}") }),
                }
            )*
            last
        }};
    }
    let dtype = attempt!(
        f64 => false |v: f64| Some(v),
        f32 => false |v: f32| Some(v as f64),
        i64 => true |v: i64| exact_int(v as i128),
        i32 => true |v: i32| Some(v as f64),
        i16 => true |v: i16| Some(v as f64),
        i8 => true |v: i8| Some(v as f64),
        u64 => true |v: u64| exact_int(v as i128),
        u32 => true |v: u32| Some(v as f64),
        u16 => true |v: u16| Some(v as f64),
        u8 => true |v: u8| Some(v as f64),
        bool => true |v: bool| Some(if v { 1.0 } else { 0.0 }),
    );
    Err(DataError::Dtype {
        path: path.to_string(),
        name: name.to_string(),
        dtype: dtype.unwrap_or_else(|| "unknown".into()),
    })
}

fn exact_int(v: i128) -> Option<f64> {
    let f = v as f64;
    (f as i128 == v).then_some(f)
}

fn convert<S: Copy + std::fmt::Display, T: Float>(
    a: ArrayD<S>,
    f: impl Fn(S) -> Option<f64>,
    integer: bool,
    name: &str,
    path: &str,
) -> Result<ArrayD<T>, DataError> {
    let shape = a.shape().to_vec();
    let mut v = Vec::with_capacity(a.len());
    for (index, &x) in a.iter().enumerate() {
        let inexact = || DataError::Inexact {
            path: path.to_string(),
            name: name.to_string(),
            index,
            value: x.to_string(),
            ty: T::NAME,
        };
        let f = f(x).ok_or_else(inexact)?;
        let t = T::of(f);
        // Integers must survive the narrowing exactly; floats are rounded
        // to the evaluation type as any float computation would.
        if integer && t.f64() != f {
            return Err(inexact());
        }
        v.push(t);
    }
    Ok(ArrayD::from_shape_vec(IxDyn(&shape), v).expect("same length as the source array"))
}

/// Reads a CSV file whose header names the columns: one column per scalar
/// input, one row per sample.
pub fn read_csv<T: Float>(
    path: impl AsRef<Path>,
    wanted: &[Wanted<'_>],
) -> Result<BTreeMap<String, ArrayD<T>>, DataError> {
    let path = path.as_ref();
    let shown = path.display().to_string();
    let file = open(path)?;
    let csv_err = |line: u64, reason: String| DataError::Csv {
        path: shown.clone(),
        line,
        reason,
    };
    let mut rdr = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(file);
    let headers = rdr
        .headers()
        .map_err(|e| csv_err(1, e.to_string()))?
        .clone();
    let mut cols = Vec::new();
    for &(name, is_pred) in wanted {
        let i = headers.iter().position(|h| h == name).ok_or_else(|| {
            csv_err(
                1,
                format!(
                    "no column `{name}` (for {} `{name}`); the header has: {}",
                    if is_pred { "pred" } else { "data" },
                    headers.iter().collect::<Vec<_>>().join(", ")
                ),
            )
        })?;
        cols.push((name, i, Vec::new()));
    }
    for (r, record) in rdr.records().enumerate() {
        let line = r as u64 + 2;
        let record = record.map_err(|e| csv_err(line, e.to_string()))?;
        for (name, i, values) in cols.iter_mut() {
            let cell = record.get(*i).unwrap_or("");
            let v: f64 = cell
                .parse()
                .map_err(|_| csv_err(line, format!("column `{name}`: `{cell}` is not a number")))?;
            values.push(T::of(v));
        }
    }
    Ok(cols
        .into_iter()
        .map(|(name, _, v)| {
            let n = v.len();
            (
                name.to_string(),
                ArrayD::from_shape_vec(IxDyn(&[n]), v).expect("one value per row"),
            )
        })
        .collect())
}

/// Writes named arrays to an `.npz` file.
pub fn write_npz<T: Float + ndarray_npy::WritableElement>(
    path: impl AsRef<Path>,
    arrays: &[(String, ndarray::ArrayViewD<'_, T>)],
) -> Result<(), DataError> {
    let path = path.as_ref();
    let file = File::create(path).map_err(|e| io_err("write", path, crate::io_reason(&e)))?;
    let mut npz = ndarray_npy::NpzWriter::new(file);
    for (name, a) in arrays {
        npz.add_array(name.as_str(), a)
            .map_err(|e| io_err("write", path, e))?;
    }
    npz.finish().map_err(|e| io_err("write", path, e))?;
    Ok(())
}

/// Writes one-dimensional arrays as the columns of a CSV file.
pub fn write_csv<T: Float>(
    path: impl AsRef<Path>,
    columns: &[(String, ndarray::ArrayViewD<'_, T>)],
) -> Result<(), DataError> {
    let path = path.as_ref();
    let mut w = csv::Writer::from_path(path).map_err(|e| io_err("write", path, e))?;
    w.write_record(columns.iter().map(|(n, _)| n.as_str()))
        .map_err(|e| io_err("write", path, e))?;
    let rows = columns.first().map_or(0, |(_, a)| a.len());
    let mut iters: Vec<_> = columns.iter().map(|(_, a)| a.iter()).collect();
    for _ in 0..rows {
        let cells: Vec<String> = iters
            .iter_mut()
            .map(|it| it.next().map_or(String::new(), |v| v.to_string()))
            .collect();
        w.write_record(&cells)
            .map_err(|e| io_err("write", path, e))?;
    }
    w.flush().map_err(|e| io_err("write", path, e))?;
    Ok(())
}
