//! lossc: a compiler for machine-learning loss functions.
pub mod ast;
pub mod diag;
pub mod parse;
pub mod span;
