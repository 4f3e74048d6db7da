//! The invalid-spec corpus: one spec per kind of mistake, each with the
//! full rendered diagnostic as an inline snapshot. Each snapshot was read
//! and judged on whether it tells the user what is wrong, where, and what to
//! do about it.

use lossc::{Color, Error, Loss};

/// Everything `lossc check` would print for `src`: errors, or warnings of
/// a valid spec.
fn diagnose(src: &str) -> String {
    match Loss::from_named_source("bad.loss", src) {
        Ok(loss) => loss.warning_report().render(Color::Never),
        Err(Error::Spec(report)) => report.render(Color::Never),
        Err(other) => other.render(Color::Never),
    }
}

macro_rules! case {
    ($name:ident, $src:expr, @$snap:literal) => {
        #[test]
        fn $name() {
            insta::assert_snapshot!(diagnose($src), @$snap);
        }
    };
}

// ------------------------------------------------------------ syntax

case!(syntax_unclosed_paren, "loss x\ntask regression\ndata y : real\npred f : real\nminimize mean((y - f)^2\nexpect convex\n", @"");
case!(syntax_assignment_in_condition, "loss x\ntask binary\ndata y : label {0, 1}\npred p : prob\nlet w = if y = 1 then 2 else 1\nminimize mean(w * bce(y, p))\n", @"");
case!(syntax_double_star_power, "loss x\ntask regression\ndata y : real\npred f : real\nminimize mean((y - f)**2)\n", @"");
case!(syntax_two_statements_on_one_line, "loss x task regression\n", @"");
case!(syntax_missing_type, "loss x\ntask regression\ndata y :\npred f : real\nminimize mean(mse(y, f))\n", @"");
case!(syntax_garbage_statement, "loss x\ntask regression\nmaximize mean(y)\n", @"");
case!(syntax_reserved_word_as_value, "loss x\ntask regression\ndata y : real\npred f : real\nminimize mean(mse(y, f) + then)\n", @"");
case!(syntax_number_too_large, "loss x\ntask regression\ndata y : real\npred f : real\nparam k = 1e999\nminimize mean(k * mse(y, f))\n", @"");

// ------------------------------------------------------------ structure

case!(missing_loss_statement, "task regression\ndata y : real\npred f : real\nminimize mean(mse(y, f))\n", @"");
case!(loss_not_first, "task regression\nloss x\ndata y : real\npred f : real\nminimize mean(mse(y, f))\n", @"");
case!(second_loss_statement, "loss x\nloss y2\ntask regression\ndata y : real\npred f : real\nminimize mean(mse(y, f))\n", @"");
case!(missing_task, "loss x\ndata y : real\npred f : real\nminimize mean(mse(y, f))\n", @"");
case!(unknown_task, "loss x\ntask regresion\ndata y : real\npred f : real\nminimize mean(mse(y, f))\n", @"");
case!(missing_minimize, "loss x\ntask regression\ndata y : real\npred f : real\nlet r = y - f\n", @"");
case!(second_minimize, "loss x\ntask regression\ndata y : real\npred f : real\nminimize mean(mse(y, f))\nminimize mean(mae(y, f))\n", @"");

// ------------------------------------------------------------ names

case!(unknown_name_with_suggestion, "loss x\ntask regression\ndata target : real\npred f : real\nminimize mean(mse(targte, f))\n", @"");
case!(unknown_function_with_suggestion, "loss x\ntask binary\ndata y : label {0, 1}\npred z : logit\nminimize mean(bce(y, sigmiod(z)))\n", @"");
case!(value_called_as_function, "loss x\ntask regression\ndata y : real\npred f : real\nparam w = 2\nminimize mean(w(mse(y, f)))\n", @"");
case!(duplicate_declaration, "loss x\ntask regression\ndata y : real\npred y : real\nminimize mean(mse(y, y))\n", @"");
case!(reserved_word_as_name, "loss x\ntask regression\ndata y : real\npred f : real\nlet if = y - f\nminimize mean(if^2)\n", @"");
case!(def_named_like_a_builtin, "loss x\ntask regression\ndata y : real\npred f : real\ndef exp(x) = x\nminimize mean(mse(y, f))\n", @"");
case!(let_used_before_definition, "loss x\ntask regression\ndata y : real\npred f : real\nlet a = 2 * r\nlet r = y - f\nminimize mean(a^2)\n", @"");
case!(let_not_visible_in_def, "loss x\ntask regression\ndata y : real\npred f : real\nlet r = y - f\ndef sq(x) = x^2 + r\nminimize mean(sq(r))\n", @"");

// ------------------------------------------------------------ calls

case!(too_many_arguments, "loss x\ntask regression\ndata y : real\npred f : real\nminimize mean(mse(y, f, 2))\n", @"");
case!(missing_argument, "loss x\ntask regression\ndata y : real\npred f : real\nminimize mean(mse(y))\n", @"");
case!(unknown_named_argument, "loss x\ntask regression\ndata y : real\npred f : real\nminimize mean(huber(y, f, detla = 0.5))\n", @"");
case!(argument_given_twice, "loss x\ntask regression\ndata y : real\npred f : real\nminimize mean(huber(y, f, 0.5, delta = 1))\n", @"");
case!(direct_recursion, "loss x\ntask regression\ndata y : real\npred f : real\ndef g(r) = g(r) + 1\nminimize mean(g(y - f))\n", @"");
case!(mutual_recursion, "loss x\ntask regression\ndata y : real\npred f : real\ndef a(r) = b(r)\ndef b(r) = a(r) * 2\nminimize mean(a(y - f))\n", @"");

// ------------------------------------------------------------ reductions

case!(sample_reduction_outside_minimize, "loss x\ntask regression\ndata y : real\npred f : real\nlet centered = f - mean(f)\nminimize mean(mse(y, centered))\n", @"");
case!(nested_sample_reduction_through_let, "loss x\ntask regression\ndata y : real\npred f : real\nlet m = mean(f)\nminimize mean((f - m)^2 + mse(y, f))\n", @"");
case!(vector_reduced_over_samples, "loss x\ntask multiclass\ndata y : onehot [C]\npred z : vector [C]\nminimize mean(y - softmax(z))\n", @"");
case!(objective_not_reduced, "loss x\ntask regression\ndata y : real\npred f : real\nminimize mse(y, f)\n", @"");
case!(per_sample_value_beside_reduction, "loss x\ntask regression\ndata y : real\ndata w : real [0, inf)\npred f : real\nminimize mean(mse(y, f)) * w\n", @"");
case!(objective_is_a_vector, "loss x\ntask multiclass\ndata y : onehot [C]\npred z : vector [C]\nminimize mean(cce_logits(y, z)) + z\n", @"");

// ------------------------------------------------------------ indices and shapes

case!(index_not_bound, "loss x\ntask multiclass\ndata y : onehot [C]\npred z : vector [C]\nminimize mean(logsumexp(z) - y[c] * z[c])\n", @"");
case!(batch_index_without_at, "loss x\ntask embedding\npred q : vector [D]\npred k : vector [D]\nminimize mean(logsumexp[j](dot(q, k@j)) - dot(q, k[j]))\n", @"");
case!(row_index_as_value, "loss x\ntask ranking\ndata rel : real\npred s : real\nminimize mean(sum[j: j != i](max(0, 1 - (s - s@j))) * i)\n", @"");
case!(at_without_binding, "loss x\ntask ranking\ndata rel : real\npred s : real\nminimize mean(max(0, 1 - (s - s@j)))\n", @"");
case!(class_index_applied_to_scalar, "loss x\ntask multiclass\ndata y : class [C]\npred p : prob\nminimize mean(-log(p[y]))\n", @"");
case!(vectors_of_different_sizes, "loss x\ntask embedding\npred a : vector [D]\npred b : vector [E]\nminimize mean(sum[c]((a - b)[c]^2))\n", @"");
case!(size_bound_to_two_numbers, "loss x\ntask multiclass\ndata y : onehot [C]\ndata w : vector [10]\ndata v : vector [12]\npred z : vector [C]\nminimize mean(cce_logits(y, z) + dot(y, w) + dot(y, v))\n", @"");
case!(feature_index_range_unknown, "loss x\ntask multiclass\ndata y : onehot [C]\npred z : vector [C]\nminimize mean(cce_logits(y, z) + sum[c](1))\n", @"");
case!(literal_index_out_of_range, "loss x\ntask multiclass\ndata y : onehot [3]\npred z : vector [3]\nminimize mean(cce_logits(y, z) - z[3])\n", @"");
case!(scalar_passed_to_softmax, "loss x\ntask binary\ndata y : label {0, 1}\npred z : logit\nminimize mean(-log(softmax(z)[y]))\n", @"");
case!(vector_passed_to_scalar_loss, "loss x\ntask multilabel\ndata y : multihot [L]\npred z : vector [L]\nminimize mean(bce_logits(y, z))\n", @"");

// ------------------------------------------------------------ conditions

case!(condition_used_as_number, "loss x\ntask binary\ndata y : label {0, 1}\npred p : prob\nminimize mean((y == 1) * bce(y, p))\n", @"");
case!(number_used_as_condition, "loss x\ntask binary\ndata y : label {0, 1}\npred p : prob\nminimize mean(if y then bce(y, p) else 0)\n", @"");

// ------------------------------------------------------------ declarations

case!(param_outside_range, "loss x\ntask binary\ndata y : label {0, 1}\npred z : logit\nparam gamma = 12 in [0, 5]\nminimize mean(focal_logits(y, z, gamma = gamma))\n", @"");
case!(empty_interval, "loss x\ntask regression\ndata y : real [10, 1]\npred f : real\nminimize mean(mse(y, f))\n", @"");
case!(unknown_type, "loss x\ntask regression\ndata y : reals\npred f : real\nminimize mean(mse(y, f))\n", @"");
case!(type_missing_size, "loss x\ntask multiclass\ndata y : onehot\npred z : vector [C]\nminimize mean(cce_logits(y, z))\n", @"");
case!(label_set_with_duplicate, "loss x\ntask binary\ndata y : label {0, 1, 1}\npred p : prob\nminimize mean(bce(y, p))\n", @"");
case!(discrete_pred, "loss x\ntask binary\ndata y : label {0, 1}\npred p : label {0, 1}\nminimize mean(bce(y, p))\n", @"");
case!(zero_size, "loss x\ntask multiclass\ndata y : onehot [0]\npred z : vector [0]\nminimize mean(cce_logits(y, z))\n", @"");

// ------------------------------------------------------------ domains of the standard losses

case!(bce_given_a_logit, "loss x\ntask binary\ndata y : label {0, 1}\npred z : logit\nminimize mean(bce(y, z))\n", @"");
case!(hinge_given_zero_one_labels, "loss x\ntask binary\ndata y : label {0, 1}\npred s : real\nminimize mean(hinge(y, s))\n", @"");
case!(focal_given_soft_targets, "loss x\ntask binary\ndata y : real [0, 1]\npred z : logit\nminimize mean(focal_logits(y, z))\n", @"");
case!(cce_given_multihot_targets, "loss x\ntask multilabel\ndata y : multihot [L]\npred z : vector [L]\nminimize mean(cce_logits(y, z))\n", @"");
case!(bce_given_plus_minus_one_labels, "loss x\ntask binary\ndata y : label {-1, 1}\npred z : logit\nminimize mean(bce_logits(y, z))\n", @"");
case!(huber_given_negative_delta, "loss x\ntask regression\ndata y : real\npred f : real\nminimize mean(huber(y, f, delta = -1))\n", @"");
case!(bce_target_outside_unit_interval, "loss x\ntask regression\ndata y : real\npred p : prob\nminimize mean(bce(y, p))\n", @"");

// ------------------------------------------------------------ expect and cost

case!(unknown_property, "loss x\ntask regression\ndata y : real\npred f : real\nminimize mean(mse(y, f))\nexpect convx\n", @"");
case!(property_for_wrong_task, "loss x\ntask regression\ndata y : real\npred f : real\nminimize mean(mse(y, f))\nexpect calibrated\n", @"");
case!(expect_for_a_data_name, "loss x\ntask regression\ndata y : real\npred f : real\nminimize mean(mse(y, f))\nexpect convex for y\n", @"");
case!(bad_quantile_level, "loss x\ntask regression\ndata y : real\npred f : real\nminimize mean(quantile(y, f, tau = 0.9))\nexpect estimand = quantile(1.5)\n", @"");
case!(unknown_cost, "loss x\ntask binary\ndata y : label {0, 1}\npred p : prob\ncost fn = 20, fq = 1\nminimize mean(bce(y, p))\n", @"");

// ------------------------------------------------------------ warnings

case!(unused_data_and_pred_warn, "loss x\ntask regression\ndata y : real\ndata w : real\npred f : real\npred g : real\nminimize mean(mse(y, f))\n", @"");
case!(unused_let_and_def_warn, "loss x\ntask regression\ndata y : real\npred f : real\nlet r = y - f\ndef sq(x) = x^2\nminimize mean(mse(y, f))\n", @"");
case!(shadowing_a_standard_loss_warns, "loss x\ntask regression\ndata y : real\npred f : real\ndef mse(a, b) = (a - b)^2 / 2\nminimize mean(mse(y, f))\n", @"");

// ------------------------------------------------------------ several errors at once

case!(every_error_in_a_file_is_reported, "loss x\ntask binary\ndata y : label {0, 1}\npred z : logit\nparam a = 3 in [0, 1]\nlet w = wieght * 2\nminimize mean(bce(y, z)) + mean(hinge(y, z))\n", @"");

// ------------------------------------------------------------ files

#[test]
fn missing_file_is_a_clean_error() {
    let e = Loss::from_file("/nonexistent/spec.loss").unwrap_err();
    insta::assert_snapshot!(e.render(Color::Never), @"");
}

#[test]
fn directory_is_a_clean_error() {
    let e = Loss::from_file(env!("CARGO_MANIFEST_DIR")).unwrap_err();
    assert!(e.render(Color::Never).contains("it is a directory"), "{}", e.render(Color::Never));
}

#[test]
fn non_utf8_is_a_clean_error_with_a_location() {
    let dir = std::env::temp_dir().join(format!("lossc-utf8-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("latin1.loss");
    std::fs::write(&path, b"loss x\n# caf\xe9\n").unwrap();
    let e = Loss::from_file(&path).unwrap_err();
    let shown = e.render(Color::Never);
    assert!(shown.contains("not UTF-8 text: invalid byte at line 2, column 6"), "{shown}");
}
