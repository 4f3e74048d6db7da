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

case!(syntax_unclosed_paren, "loss x\ntask regression\ndata y : real\npred f : real\nminimize mean((y - f)^2\nexpect convex\n", @"
error[E0001]: syntax error: expected an operator, `)` or `,`, found `expect`
  ┌─ bad.loss:6:1
  │
5 │ minimize mean((y - f)^2
  │              - this `(` is never closed
6 │ expect convex
  │ ^^^^^^ unexpected `expect`
  │
  = hint: close the `(` before the next statement
");
case!(syntax_assignment_in_condition, "loss x\ntask binary\ndata y : label {0, 1}\npred p : prob\nlet w = if y = 1 then 2 else 1\nminimize mean(w * bce(y, p))\n", @"
error[E0001]: syntax error: expected an operator, `then` or `(`, found `=`
  ┌─ bad.loss:5:14
  │
5 │ let w = if y = 1 then 2 else 1
  │              ^ unexpected `=`
  │
  = hint: compare with `==`; `=` only binds names in let, param and def
");
case!(syntax_double_star_power, "loss x\ntask regression\ndata y : real\npred f : real\nminimize mean((y - f)**2)\n", @"
error[E0001]: syntax error: expected an expression, `(` or an operator, found `*`
  ┌─ bad.loss:5:23
  │
5 │ minimize mean((y - f)**2)
  │                       ^ unexpected `*`
  │
  = hint: powers are written with `^`, as in `x^2`
");
case!(syntax_two_statements_on_one_line, "loss x task regression\n", @"
error[E0001]: syntax error: expected the end of the line, found `task`
  ┌─ bad.loss:1:8
  │
1 │ loss x task regression
  │        ^^^^ unexpected `task`
  │
  = hint: each statement goes on its own line
");
case!(syntax_missing_type, "loss x\ntask regression\ndata y :\npred f : real\nminimize mean(mse(y, f))\n", @"
error[E0001]: syntax error: expected a type, found the end of the line
  ┌─ bad.loss:3:9
  │
3 │ data y :
  │         ^ the end of the line comes too early
");
case!(syntax_garbage_statement, "loss x\ntask regression\nmaximize mean(y)\n", @"
error[E0001]: syntax error: expected a statement, found `maximize`
  ┌─ bad.loss:3:1
  │
3 │ maximize mean(y)
  │ ^^^^^^^^ unexpected `maximize`
  │
  = hint: did you mean `minimize`?
");
case!(syntax_reserved_word_as_value, "loss x\ntask regression\ndata y : real\npred f : real\nminimize mean(mse(y, f) + then)\n", @"
error[E0001]: syntax error: expected an expression, found `then`
  ┌─ bad.loss:5:27
  │
5 │ minimize mean(mse(y, f) + then)
  │                           ^^^^ unexpected `then`
  │
  = hint: `then` is a reserved word and cannot be used as a value
");
case!(syntax_number_too_large, "loss x\ntask regression\ndata y : real\npred f : real\nparam k = 1e999\nminimize mean(k * mse(y, f))\n", @"
error[E0003]: number `1e999` is too large
  ┌─ bad.loss:5:11
  │
5 │ param k = 1e999
  │           ^^^^^ overflows a 64-bit float
  │
  = hint: write `inf` for infinity
");

// ------------------------------------------------------------ structure

case!(missing_loss_statement, "task regression\ndata y : real\npred f : real\nminimize mean(mse(y, f))\n", @"
error[E0004]: missing `loss NAME`
  ┌─ bad.loss:1:1
  │
1 │ task regression
  │ ^ expected `loss NAME` here
  │
  = hint: every spec starts with `loss my_loss`
");
case!(loss_not_first, "task regression\nloss x\ndata y : real\npred f : real\nminimize mean(mse(y, f))\n", @"
error[E0004]: `loss NAME` must be the first statement
  ┌─ bad.loss:2:1
  │
2 │ loss x
  │ ^^^^^^ move this to the top
");
case!(second_loss_statement, "loss x\nloss y2\ntask regression\ndata y : real\npred f : real\nminimize mean(mse(y, f))\n", @"
error[E0005]: a second `loss` statement
  ┌─ bad.loss:2:1
  │
1 │ loss x
  │      - first
2 │ loss y2
  │ ^^^^^^^ second
  │
  = hint: one file describes one loss
");
case!(missing_task, "loss x\ndata y : real\npred f : real\nminimize mean(mse(y, f))\n", @"
error[E0004]: missing `task`
  ┌─ bad.loss:1:1
  │
1 │ loss x
  │ ^^^^^^ this spec has no task
  │
  = hint: add one of: task binary, multiclass, multilabel, regression, ranking, embedding
");
case!(unknown_task, "loss x\ntask regresion\ndata y : real\npred f : real\nminimize mean(mse(y, f))\n", @"
error[E0013]: unknown task `regresion`
  ┌─ bad.loss:2:6
  │
2 │ task regresion
  │      ^^^^^^^^^ not a task
  │
  = hint: did you mean `regression`?
  = hint: tasks: binary, multiclass, multilabel, regression, ranking, embedding
");
case!(missing_minimize, "loss x\ntask regression\ndata y : real\npred f : real\nlet r = y - f\n", @"
error[E0030]: missing `minimize`: the spec has no objective
  ┌─ bad.loss:1:1
  │
1 │ loss x
  │ ^^^^^^ this spec has no objective
  │
  = hint: add e.g. `minimize mean(bce(y, p))`
");
case!(second_minimize, "loss x\ntask regression\ndata y : real\npred f : real\nminimize mean(mse(y, f))\nminimize mean(mae(y, f))\n", @"
error[E0031]: a second `minimize` statement
  ┌─ bad.loss:6:1
  │
5 │ minimize mean(mse(y, f))
  │ ------------------------ first
6 │ minimize mean(mae(y, f))
  │ ^^^^^^^^^^^^^^^^^^^^^^^^ second
  │
  = hint: combine the objectives into one: minimize A + lambda * B
");

// ------------------------------------------------------------ names

case!(unknown_name_with_suggestion, "loss x\ntask regression\ndata target : real\npred f : real\nminimize mean(mse(targte, f))\n", @"
error[E0010]: unknown name `targte`
  ┌─ bad.loss:5:19
  │
5 │ minimize mean(mse(targte, f))
  │                   ^^^^^^ not declared
  │
  = hint: did you mean `target`?
");
case!(unknown_function_with_suggestion, "loss x\ntask binary\ndata y : label {0, 1}\npred z : logit\nminimize mean(bce(y, sigmiod(z)))\n", @"
error[E0016]: unknown function `sigmiod`
  ┌─ bad.loss:5:22
  │
5 │ minimize mean(bce(y, sigmiod(z)))
  │                      ^^^^^^^ no builtin, standard loss or def has this name
  │
  = hint: did you mean `sigmoid`?
  = hint: `lossc prelude` lists the standard losses
");
case!(value_called_as_function, "loss x\ntask regression\ndata y : real\npred f : real\nparam w = 2\nminimize mean(w(mse(y, f)))\n", @"
error[E0016]: unknown function `w`
  ┌─ bad.loss:6:15
  │
6 │ minimize mean(w(mse(y, f)))
  │               ^ no builtin, standard loss or def has this name
  │
  = hint: `w` is a value, not a function; write `w * (...)` to multiply
");
case!(duplicate_declaration, "loss x\ntask regression\ndata y : real\npred y : real\nminimize mean(mse(y, y))\n", @"
error[E0011]: `y` is already declared
  ┌─ bad.loss:4:6
  │
3 │ data y : real
  │      - first declared here, as a data
4 │ pred y : real
  │      ^ second declaration, as a pred
  │
  = hint: every data, pred, param, let, def and size name must be distinct
");
case!(reserved_word_as_name, "loss x\ntask regression\ndata y : real\ndata for : real\npred f : real\nminimize mean(mse(y, f))\n", @"
error[E0012]: `for` is a reserved word
  ┌─ bad.loss:4:6
  │
4 │ data for : real
  │      ^^^ cannot be used as a name
  │
  = hint: pick another name, such as `for_`
");
case!(def_named_like_a_builtin, "loss x\ntask regression\ndata y : real\npred f : real\ndef exp(x) = x\nminimize mean(mse(y, f))\n", @"
error[E0012]: `exp` is a builtin function
  ┌─ bad.loss:5:5
  │
5 │ def exp(x) = x
  │     ^^^ cannot be redefined
  │
  = hint: name your function differently, such as `my_exp`
");
case!(let_used_before_definition, "loss x\ntask regression\ndata y : real\npred f : real\nlet a = 2 * r\nlet r = y - f\nminimize mean(a^2)\n", @"
error[E0024]: `r` is used before its `let`
  ┌─ bad.loss:5:13
  │
5 │ let a = 2 * r
  │             ^ used here
6 │ let r = y - f
  │     - defined later here
  │
  = hint: lets are evaluated top to bottom: move the let above this line
");
case!(let_not_visible_in_def, "loss x\ntask regression\ndata y : real\npred f : real\nlet r = y - f\ndef sq(x) = x^2 + r\nminimize mean(sq(r))\n", @"
error[E0010]: unknown name `r`
  ┌─ bad.loss:6:19
  │
6 │ def sq(x) = x^2 + r
  │                   ^ not declared
  │
  = hint: `r` is a let; lets are not visible inside a def: pass it as an argument
");

// ------------------------------------------------------------ calls

case!(too_many_arguments, "loss x\ntask regression\ndata y : real\npred f : real\nminimize mean(mse(y, f, 2))\n", @"
error[E0020]: `mse` takes 2 arguments, but 3 were given
  ┌─ bad.loss:5:25
  │
5 │ minimize mean(mse(y, f, 2))
  │                         ^ extra argument
  │
  = hint: mse(y, yhat)
");
case!(missing_argument, "loss x\ntask regression\ndata y : real\npred f : real\nminimize mean(mse(y))\n", @"
error[E0020]: `mse` is missing argument `yhat`
  ┌─ bad.loss:5:15
  │
5 │ minimize mean(mse(y))
  │               ^^^^^^ `yhat` not given
  │
  = hint: mse(y, yhat)
");
case!(unknown_named_argument, "loss x\ntask regression\ndata y : real\npred f : real\nminimize mean(huber(y, f, detla = 0.5))\n", @"
error[E0021]: `huber` has no parameter `detla`
  ┌─ bad.loss:5:27
  │
5 │ minimize mean(huber(y, f, detla = 0.5))
  │                           ^^^^^ unknown parameter
  │
  = hint: did you mean `delta`?
  = hint: huber(y, yhat, delta)
");
case!(argument_given_twice, "loss x\ntask regression\ndata y : real\npred f : real\nminimize mean(huber(y, f, 0.5, delta = 1))\n", @"
error[E0022]: argument `delta` given twice
  ┌─ bad.loss:5:32
  │
5 │ minimize mean(huber(y, f, 0.5, delta = 1))
  │                           ---  ^^^^^ again
  │                           │     
  │                           first given here
");
case!(direct_recursion, "loss x\ntask regression\ndata y : real\npred f : real\ndef g(r) = g(r) + 1\nminimize mean(g(y - f))\n", @"
error[E0023]: `g` calls itself
  ┌─ bad.loss:5:5
  │
5 │ def g(r) = g(r) + 1
  │     ^ recursive definition
  │
  = hint: defs are expanded inline, so recursion is not allowed; unroll it by hand
");
case!(mutual_recursion, "loss x\ntask regression\ndata y : real\npred f : real\ndef a(r) = b(r)\ndef b(r) = a(r) * 2\nminimize mean(a(y - f))\n", @"
error[E0023]: `a` calls itself through a → b → a
  ┌─ bad.loss:5:5
  │
5 │ def a(r) = b(r)
  │     ^ recursive definition
  │
  = hint: defs are expanded inline, so recursion is not allowed; unroll it by hand
");

// ------------------------------------------------------------ reductions

case!(sample_reduction_outside_minimize, "loss x\ntask regression\ndata y : real\npred f : real\nlet centered = f - mean(f)\nminimize mean(mse(y, centered))\n", @"
error[E0032]: `mean(f)` reduces over all samples, outside `minimize`
  ┌─ bad.loss:5:20
  │
5 │ let centered = f - mean(f)
  │                    ^^^^^^^ a sample reduction inside a per-sample value
  │
  = hint: mean(...) and sum(...) without an index belong only in `minimize`
  = hint: for a batch statistic in a per-sample value use a batch reduction, as in mean[j](x@j)
");
case!(nested_sample_reduction_through_let, "loss x\ntask regression\ndata y : real\npred f : real\nlet m = mean(f)\nminimize mean((f - m)^2 + mse(y, f))\n", @"
error[E0032]: `m` is a sample reduction, used inside a per-sample expression
  ┌─ bad.loss:6:20
  │
5 │ let m = mean(f)
  │     - defined here
6 │ minimize mean((f - m)^2 + mse(y, f))
  │                    ^ reduced over the samples
  │
  = hint: mean(...) and sum(...) over samples belong only in `minimize`; for a batch statistic per sample use mean[j](x@j)
");
case!(vector_reduced_over_samples, "loss x\ntask multiclass\ndata y : onehot [C]\npred z : vector [C]\nminimize mean(y - softmax(z))\n", @"
error[E0033]: `mean` over samples of a vector of size C
  ┌─ bad.loss:5:15
  │
5 │ minimize mean(y - softmax(z))
  │               ^^^^^^^^^^^^^^ one vector per sample
  │
  = hint: reduce the components first: mean(sum[c]((y - softmax(z))[c]))
");
case!(objective_not_reduced, "loss x\ntask regression\ndata y : real\npred f : real\nminimize mse(y, f)\n", @"
error[E0034]: the objective is a per-sample value
  ┌─ bad.loss:5:10
  │
5 │ minimize mse(y, f)
  │          ^^^^^^^^^ not reduced over the samples
  │
  = hint: wrap it in a sample reduction: minimize mean(mse(y, f))
");
case!(per_sample_value_beside_reduction, "loss x\ntask regression\ndata y : real\ndata w : real [0, inf)\npred f : real\nminimize mean(mse(y, f)) * w\n", @"
error[E0034]: a per-sample value is combined with a sample reduction
  ┌─ bad.loss:6:28
  │
6 │ minimize mean(mse(y, f)) * w
  │                            ^ this varies per sample, outside any mean(...) or sum(...)
  │
  = hint: move it inside the reduction, e.g. mean(w * ...)
");
case!(objective_is_a_vector, "loss x\ntask multiclass\ndata y : onehot [C]\npred z : vector [C]\nminimize mean(cce_logits(y, z)) + z\n", @"
error[E0047]: the objective is a vector of size C
  ┌─ bad.loss:5:10
  │
5 │ minimize mean(cce_logits(y, z)) + z
  │          ^^^^^^^^^^^^^^^^^^^^^^^^^^ must be one number
  │
  = hint: reduce the components first: minimize mean(sum[c](...))

error[E0034]: a per-sample value is combined with a sample reduction
  ┌─ bad.loss:5:35
  │
5 │ minimize mean(cce_logits(y, z)) + z
  │                                   ^ this varies per sample, outside any mean(...) or sum(...)
  │
  = hint: move it inside the reduction, e.g. mean(z * ...)
");

// ------------------------------------------------------------ indices and shapes

case!(index_not_bound, "loss x\ntask multiclass\ndata y : onehot [C]\npred z : vector [C]\nminimize mean(logsumexp(z) - y[c] * z[c])\n", @"
error[E0040]: index `c` is not bound
  ┌─ bad.loss:5:32
  │
5 │ minimize mean(logsumexp(z) - y[c] * z[c])
  │                                ^ no reduction binds it
  │
  = hint: bind it with a feature reduction, as in sum[c](y[c])

error[E0040]: index `c` is not bound
  ┌─ bad.loss:5:39
  │
5 │ minimize mean(logsumexp(z) - y[c] * z[c])
  │                                       ^ no reduction binds it
  │
  = hint: bind it with a feature reduction, as in sum[c](z[c])
");
case!(batch_index_without_at, "loss x\ntask embedding\npred q : vector [D]\npred k : vector [D]\nminimize mean(logsumexp[j](dot(q, k@j) - q[j]))\n", @"
error[E0041]: batch index `j` used without `@`
  ┌─ bad.loss:5:44
  │
5 │ minimize mean(logsumexp[j](dot(q, k@j) - q[j]))
  │                                            ^ `j` is a row index
  │
  = hint: write x@j for the value of x in row j; `j` itself may only be compared with i or another row index
");
case!(row_index_as_value, "loss x\ntask ranking\ndata rel : real\npred s : real\nminimize mean(sum[j: j != i](max(0, 1 - (s - s@j))) * i)\n", @"
error[E0041]: `i` (the current row) used as a value
  ┌─ bad.loss:5:55
  │
5 │ minimize mean(sum[j: j != i](max(0, 1 - (s - s@j))) * i)
  │                                                       ^ only valid in a comparison with a batch index
  │
  = hint: write the current row's value as `x`; compare rows in a filter: sum[j: j != i](...)
");
case!(at_without_binding, "loss x\ntask ranking\ndata rel : real\npred s : real\nminimize mean(max(0, 1 - (s - s@j)))\n", @"
error[E0040]: index `j` is not bound
  ┌─ bad.loss:5:33
  │
5 │ minimize mean(max(0, 1 - (s - s@j)))
  │                                 ^ no reduction binds it
  │
  = hint: bind it with a batch reduction, as in sum[j](x@j)
");
case!(class_index_applied_to_scalar, "loss x\ntask multiclass\ndata y : class [C]\npred p : prob\nminimize mean(-log(p[y]))\n", @"
error[E0042]: `p` is a scalar and cannot be indexed
  ┌─ bad.loss:5:20
  │
5 │ minimize mean(-log(p[y]))
  │                    ^ a scalar
  │
  = hint: only vectors take an index: declare `p` as probs [C] or vector [C] to pick a component
");
case!(vectors_of_different_sizes, "loss x\ntask embedding\npred a : vector [D]\npred b : vector [E]\nminimize mean(sum[c]((a - b)[c]^2))\n", @"
error[E0043]: vectors of different sizes combined: D and E
  ┌─ bad.loss:5:22
  │
5 │ minimize mean(sum[c]((a - b)[c]^2))
  │                      ^^^^^^^ sizes D and E
  │
  = hint: if they are the same length, use one size name for both
");
case!(size_bound_to_two_numbers, "loss x\ntask multiclass\ndata y : onehot [C]\ndata w : vector [10]\ndata v : vector [12]\npred z : vector [C]\nminimize mean(cce_logits(y, z) + dot(y, w) + dot(y, v))\n", @"
error[E0044]: size `C` is bound to two numbers: 10 and 12
  ┌─ bad.loss:7:46
  │
7 │ minimize mean(cce_logits(y, z) + dot(y, w) + dot(y, v))
  │                                  ---------   ^^^^^^^^^ here `C` must be 12
  │                                  │            
  │                                  here `C` became 10
  │
  = hint: a size name stands for one length in the whole file
");
case!(feature_index_range_unknown, "loss x\ntask multiclass\ndata y : onehot [C]\npred z : vector [C]\nminimize mean(cce_logits(y, z) + sum[c](1))\n", @"
error[E0045]: cannot tell what `c` ranges over
  ┌─ bad.loss:5:38
  │
5 │ minimize mean(cce_logits(y, z) + sum[c](1))
  │                                      ^ never used to index a vector
  │
  = hint: a feature index ranges over a vector's components: use it as z[c]; a batch index is used as x@c
");
case!(literal_index_out_of_range, "loss x\ntask multiclass\ndata y : onehot [3]\npred z : vector [3]\nminimize mean(cce_logits(y, z) - z[3])\n", @"
error[E0045]: index 3 is out of range for a vector of size 3
  ┌─ bad.loss:5:36
  │
5 │ minimize mean(cce_logits(y, z) - z[3])
  │                                    ^ not a valid component
  │
  = hint: components are numbered 0 to 2
");
case!(scalar_passed_to_softmax, "loss x\ntask binary\ndata y : label {0, 1}\npred z : logit\nminimize mean(-log(softmax(z)[y]))\n", @"
error[E0047]: `softmax` expects a vector, but `z` is a scalar
  ┌─ bad.loss:5:28
  │
5 │ minimize mean(-log(softmax(z)[y]))
  │                            ^ a scalar
  │
  = hint: softmax works on vectors such as vector [D] or probs [C]; for a single logit use sigmoid
");
case!(vector_passed_to_scalar_loss, "loss x\ntask multilabel\ndata y : multihot [L]\npred z : vector [L]\nminimize mean(bce_logits(y, z))\n", @"
error[E0047]: `bce_logits` expects a scalar for `y`, but `y` is a vector of size L
  ┌─ bad.loss:5:26
  │
5 │ minimize mean(bce_logits(y, z))
  │                          ^ a vector
  │
  = hint: apply it per component and sum: sum[c](bce_logits(y[c], z[c]))
");

// ------------------------------------------------------------ conditions

case!(condition_used_as_number, "loss x\ntask binary\ndata y : label {0, 1}\npred p : prob\nminimize mean((y == 1) * bce(y, p))\n", @"
error[E0048]: a condition is used as a number
  ┌─ bad.loss:5:15
  │
5 │ minimize mean((y == 1) * bce(y, p))
  │               ^^^^^^^^ this is true or false, not a number
  │
  = hint: write `if (y == 1) then 1 else 0` for an indicator
");
case!(number_used_as_condition, "loss x\ntask binary\ndata y : label {0, 1}\npred p : prob\nminimize mean(if y then bce(y, p) else 0)\n", @"
error[E0048]: expected a condition
  ┌─ bad.loss:5:18
  │
5 │ minimize mean(if y then bce(y, p) else 0)
  │                  ^ this is a number, not true or false
  │
  = hint: compare it, as in `y == 1`
");

// ------------------------------------------------------------ declarations

case!(param_outside_range, "loss x\ntask binary\ndata y : label {0, 1}\npred z : logit\nparam gamma = 12 in [0, 5]\nminimize mean(focal_logits(y, z, gamma = gamma))\n", @"
error[E0050]: param `gamma` = 12 is outside its range [0, 5]
  ┌─ bad.loss:5:15
  │
5 │ param gamma = 12 in [0, 5]
  │               ^^ the default is outside [0, 5]
  │
  = hint: choose a value in [0, 5], or widen the range
");
case!(empty_interval, "loss x\ntask regression\ndata y : real [10, 1]\npred f : real\nminimize mean(mse(y, f))\n", @"
error[E0051]: the interval [10, 1] is empty
  ┌─ bad.loss:3:15
  │
3 │ data y : real [10, 1]
  │               ^^^^^^^ lower bound must be below the upper bound
  │
  = hint: did you mean [1, 10]?
");
case!(unknown_type, "loss x\ntask regression\ndata y : reals\npred f : real\nminimize mean(mse(y, f))\n", @"
error[E0014]: unknown type `reals`
  ┌─ bad.loss:3:10
  │
3 │ data y : reals
  │          ^^^^^ not a type
  │
  = hint: did you mean `real`?
  = hint: types: real, prob, logit, label {..}, class [C], onehot [C], multihot [C], probs [C], vector [D]
");
case!(type_missing_size, "loss x\ntask multiclass\ndata y : onehot\npred z : vector [C]\nminimize mean(cce_logits(y, z))\n", @"
error[E0014]: `onehot` needs a size
  ┌─ bad.loss:3:10
  │
3 │ data y : onehot
  │          ^^^^^^ in this type
  │
  = hint: write onehot [C] with a size name, or onehot [10]
");
case!(label_set_with_duplicate, "loss x\ntask binary\ndata y : label {0, 1, 1}\npred p : prob\nminimize mean(bce(y, p))\n", @"
error[E0053]: label 1 is listed twice
  ┌─ bad.loss:3:23
  │
3 │ data y : label {0, 1, 1}
  │                       ^ duplicate
");
case!(discrete_pred, "loss x\ntask binary\ndata y : label {0, 1}\npred p : label {0, 1}\nminimize mean(bce(y, p))\n", @"
error[E0061]: pred `p` has a discrete type
  ┌─ bad.loss:4:10
  │
4 │ pred p : label {0, 1}
  │          ^^^^^^^^^^^^ `label {0, 1}` takes only discrete values
  │
  = hint: a pred is a model output to differentiate: use real, prob, logit, probs [C] or vector [C]
");
case!(zero_size, "loss x\ntask multiclass\ndata y : onehot [0]\npred z : vector [0]\nminimize mean(cce_logits(y, z))\n", @"
error[E0052]: a vector size must be at least 1
  ┌─ bad.loss:3:18
  │
3 │ data y : onehot [0]
  │                  ^ size 0

error[E0052]: a vector size must be at least 1
  ┌─ bad.loss:4:18
  │
4 │ pred z : vector [0]
  │                  ^ size 0
");

// ------------------------------------------------------------ domains of the standard losses

case!(bce_given_a_logit, "loss x\ntask binary\ndata y : label {0, 1}\npred z : logit\nminimize mean(bce(y, z))\n", @"
error[E0060]: `bce` expects a probability in (0, 1) for `p`, but `z` is declared `logit`
  ┌─ bad.loss:5:22
  │
5 │ minimize mean(bce(y, z))
  │                      ^ not a probability in (0, 1)
  │
  = hint: for logits use bce_logits(y, z)
");
case!(hinge_given_zero_one_labels, "loss x\ntask binary\ndata y : label {0, 1}\npred s : real\nminimize mean(hinge(y, s))\n", @"
error[E0060]: `hinge` expects a label in {-1, 1} for `y`, but `y` is declared `label {0, 1}`
  ┌─ bad.loss:5:21
  │
5 │ minimize mean(hinge(y, s))
  │                     ^ not a label in {-1, 1}
  │
  = hint: map {0, 1} labels to {-1, 1}: hinge(2 * y - 1, s)
");
case!(focal_given_soft_targets, "loss x\ntask binary\ndata y : real [0, 1]\npred z : logit\nminimize mean(focal_logits(y, z))\n", @"
error[E0060]: `focal_logits` expects a label in {0, 1} for `y`, but `y` is declared `real [0, 1]`
  ┌─ bad.loss:5:28
  │
5 │ minimize mean(focal_logits(y, z))
  │                            ^ not a label in {0, 1}
  │
  = hint: focal loss needs hard labels {0, 1}; for soft targets use bce
");
case!(cce_given_multihot_targets, "loss x\ntask multilabel\ndata y : multihot [L]\npred z : vector [L]\nminimize mean(cce_logits(y, z))\n", @"
error[E0060]: `cce_logits` expects a probability vector (a row summing to 1) for `y`, but `y` is declared `multihot [L]`
  ┌─ bad.loss:5:26
  │
5 │ minimize mean(cce_logits(y, z))
  │                          ^ not a probability vector (a row summing to 1)
  │
  = hint: several labels per example is a multilabel task: use sum[c](bce_logits(y[c], z[c]))
");
case!(bce_given_plus_minus_one_labels, "loss x\ntask binary\ndata y : label {-1, 1}\npred z : logit\nminimize mean(bce_logits(y, z))\n", @"
error[E0060]: `bce_logits` expects a value in [0, 1] for `y`, but `y` is declared `label {-1, 1}`
  ┌─ bad.loss:5:26
  │
5 │ minimize mean(bce_logits(y, z))
  │                          ^ not a value in [0, 1]
  │
  = hint: map {-1, 1} labels to {0, 1}: bce_logits((y + 1) / 2, z)
");
case!(huber_given_negative_delta, "loss x\ntask regression\ndata y : real\npred f : real\nminimize mean(huber(y, f, delta = -1))\n", @"
error[E0060]: `huber` expects a value in (0, inf) for `delta`, but `-1` is the constant -1
  ┌─ bad.loss:5:35
  │
5 │ minimize mean(huber(y, f, delta = -1))
  │                                   ^^ not a value in (0, inf)
");
case!(bce_target_outside_unit_interval, "loss x\ntask regression\ndata y : real\npred p : prob\nminimize mean(bce(y, p))\n", @"
error[E0060]: `bce` expects a value in [0, 1] for `y`, but `y` is declared `real`
  ┌─ bad.loss:5:19
  │
5 │ minimize mean(bce(y, p))
  │                   ^ not a value in [0, 1]
  │
  = hint: the target of bce is a label or a probability in [0, 1]; for a real-valued target use a regression loss such as mse
");

// ------------------------------------------------------------ expect and cost

case!(unknown_property, "loss x\ntask regression\ndata y : real\npred f : real\nminimize mean(mse(y, f))\nexpect convx\n", @"
error[E0015]: unknown property `convx`
  ┌─ bad.loss:6:8
  │
6 │ expect convx
  │        ^^^^^ not a property
  │
  = hint: did you mean `convex`?
  = hint: properties: differentiable, convex, bounded_gradient, finite, calibrated, estimand = mean|median|quantile(tau)
");
case!(property_for_wrong_task, "loss x\ntask regression\ndata y : real\npred f : real\nminimize mean(mse(y, f))\nexpect calibrated\n", @"
error[E0070]: `calibrated` does not apply to a regression task
  ┌─ bad.loss:6:8
  │
6 │ expect calibrated
  │        ^^^^^^^^^^ only for binary and multiclass tasks
  │
  = hint: remove this expect, or check the task
");
case!(expect_for_a_data_name, "loss x\ntask regression\ndata y : real\npred f : real\nminimize mean(mse(y, f))\nexpect convex for y\n", @"
error[E0070]: `y` is not a pred
  ┌─ bad.loss:6:19
  │
6 │ expect convex for y
  │                   ^ expect ... for NAME takes a pred
  │
  = hint: did you mean `f`?
  = hint: preds: f
");
case!(bad_quantile_level, "loss x\ntask regression\ndata y : real\npred f : real\nminimize mean(quantile(y, f, tau = 0.9))\nexpect estimand = quantile(1.5)\n", @"
error[E0015]: a quantile level must lie in (0, 1)
  ┌─ bad.loss:6:28
  │
6 │ expect estimand = quantile(1.5)
  │                            ^^^ outside (0, 1)
  │
  = hint: e.g. estimand = quantile(0.9)
");
case!(unknown_cost, "loss x\ntask binary\ndata y : label {0, 1}\npred p : prob\ncost fn = 20, fq = 1\nminimize mean(bce(y, p))\n", @"
error[E0071]: unknown cost `fq`
  ┌─ bad.loss:5:15
  │
5 │ cost fn = 20, fq = 1
  │               ^^ not a cost
  │
  = hint: did you mean `fn`?
  = hint: costs are fn, fp, tn and tp (false/true negatives/positives)
");

// ------------------------------------------------------------ warnings

case!(unused_data_and_pred_warn, "loss x\ntask regression\ndata y : real\ndata w : real\npred f : real\npred g : real\nminimize mean(mse(y, f))\n", @"
warning[W0001]: data `w` is never used by the objective
  ┌─ bad.loss:4:6
  │
4 │ data w : real
  │      ^ declared here
  │
  = hint: use it in `minimize` or remove it

warning[W0001]: pred `g` is never used by the objective
  ┌─ bad.loss:6:6
  │
6 │ pred g : real
  │      ^ declared here
  │
  = hint: its gradient would be zero; use it in `minimize` or remove it
");
case!(unused_let_and_def_warn, "loss x\ntask regression\ndata y : real\npred f : real\nlet r = y - f\ndef sq(x) = x^2\nminimize mean(mse(y, f))\n", @"
warning[W0002]: `let r` is never used
  ┌─ bad.loss:5:5
  │
5 │ let r = y - f
  │     ^ defined here
  │
  = hint: use it or remove it

warning[W0002]: `def sq` is never used
  ┌─ bad.loss:6:5
  │
6 │ def sq(x) = x^2
  │     ^^ defined here
  │
  = hint: call it or remove it
");
case!(shadowing_a_standard_loss_warns, "loss x\ntask regression\ndata y : real\npred f : real\ndef mse(a, b) = (a - b)^2 / 2\nminimize mean(mse(y, f))\n", @"
warning[W0003]: `def mse` replaces the standard loss `mse`
  ┌─ bad.loss:5:5
  │
5 │ def mse(a, b) = (a - b)^2 / 2
  │     ^^^ shadows the prelude
  │
  = hint: calls in this file use your definition (the standard losses keep theirs); rename it to keep both
");

// ------------------------------------------------------------ several errors at once

case!(every_error_in_a_file_is_reported, "loss x\ntask binary\ndata y : label {0, 1}\npred z : logit\nparam a = 3 in [0, 1]\nlet w = wieght * 2\nminimize mean(bce(y, z)) + mean(hinge(y, z))\n", @"
error[E0050]: param `a` = 3 is outside its range [0, 1]
  ┌─ bad.loss:5:11
  │
5 │ param a = 3 in [0, 1]
  │           ^ the default is outside [0, 1]
  │
  = hint: choose a value in [0, 1], or widen the range

error[E0010]: unknown name `wieght`
  ┌─ bad.loss:6:9
  │
6 │ let w = wieght * 2
  │         ^^^^^^ not declared
  │
  = hint: declare it with data, pred, param or let

error[E0060]: `bce` expects a probability in (0, 1) for `p`, but `z` is declared `logit`
  ┌─ bad.loss:7:22
  │
7 │ minimize mean(bce(y, z)) + mean(hinge(y, z))
  │                      ^ not a probability in (0, 1)
  │
  = hint: for logits use bce_logits(y, z)

error[E0060]: `hinge` expects a label in {-1, 1} for `y`, but `y` is declared `label {0, 1}`
  ┌─ bad.loss:7:39
  │
7 │ minimize mean(bce(y, z)) + mean(hinge(y, z))
  │                                       ^ not a label in {-1, 1}
  │
  = hint: map {0, 1} labels to {-1, 1}: hinge(2 * y - 1, z)
");

// ------------------------------------------------------------ found while writing the docs

case!(chained_comparison, "loss x\ntask regression\ndata y : real\npred f : real\nminimize mean(if 0 < f < 1 then mse(y, f) else 0)\n", @"
error[E0048]: comparisons do not chain
  ┌─ bad.loss:5:18
  │
5 │ minimize mean(if 0 < f < 1 then mse(y, f) else 0)
  │                  ^^^^^^^^^ read as (a < b) < c, comparing a condition with a number
  │
  = hint: write `0 < f and f < 1`
");
case!(cost_in_a_regression_task, "loss x\ntask regression\ndata y : real\npred f : real\ncost fn = 2, fp = 1\nminimize mean(mse(y, f))\n", @"
error[E0071]: `cost` does not apply to a regression task
  ┌─ bad.loss:5:1
  │
5 │ cost fn = 2, fp = 1
  │ ^^^^^^^^^^^^^^^^^^^ decision costs are for binary classification
  │
  = hint: remove it, or weight the loss itself to express which errors cost more
");
case!(contradictory_expectations, "loss x\ntask regression\ndata y : real\npred f : real\nminimize mean(mse(y, f))\nexpect convex\nexpect not convex\n", @"
error[E0070]: this contradicts an earlier `expect` of `convex`
  ┌─ bad.loss:7:1
  │
6 │ expect convex
  │ ------------- the earlier expectation
7 │ expect not convex
  │ ^^^^^^^^^^^^^^^^^ contradicts
  │
  = hint: keep the one you believe; `lossc analyze` will tell which holds
");
case!(transposed_letters_are_suggested, "loss x\ntask regression\ndata y : real\npred f : real\nminimize mean(huber(y, f, detla = 0.5))\n", @"
error[E0021]: `huber` has no parameter `detla`
  ┌─ bad.loss:5:27
  │
5 │ minimize mean(huber(y, f, detla = 0.5))
  │                           ^^^^^ unknown parameter
  │
  = hint: did you mean `delta`?
  = hint: huber(y, yhat, delta)
");
case!(bce_given_exp_of_a_logit, "loss x\ntask binary\ndata y : label {0, 1}\npred z : logit\nminimize mean(bce(y, exp(z)))\n", @"
error[E0060]: `bce` expects a probability in (0, 1) for `p`, but `exp(z)` is a value in (0, inf)
  ┌─ bad.loss:5:22
  │
5 │ minimize mean(bce(y, exp(z)))
  │                      ^^^^^^ not a probability in (0, 1)
  │
  = hint: this expression can leave (0, 1), where log is undefined; pass a `prob` or sigmoid(...) of a logit
");
case!(index_by_a_real_value, "loss x\ntask multiclass\ndata y : real\npred z : vector [C]\nminimize mean(logsumexp(z) - z[y])\n", @"
error[E0040]: `y` is not an index
  ┌─ bad.loss:5:32
  │
5 │ minimize mean(logsumexp(z) - z[y])
  │                                ^ y is any real number
  │
  = hint: to pick a component by `y`, declare it as a class: data y : class [C]
");
case!(vector_body_of_a_feature_reduction, "loss x\ntask multiclass\ndata y : onehot [C]\npred z : vector [C]\nminimize mean(cce_logits(y, z) + sum[c](softmax(z)))\n", @"
error[E0047]: the body of sum[c] is a vector of size C
  ┌─ bad.loss:5:41
  │
5 │ minimize mean(cce_logits(y, z) + sum[c](softmax(z)))
  │                                         ^^^^^^^^^^ must be one number per index
  │
  = hint: index it with [c]
");

// ------------------------------------------------------------ found in review

case!(spec_without_a_pred, "loss x\ntask regression\ndata y : real\nminimize mean(y)\n", @"
error[E0004]: missing `pred`: nothing to differentiate
  ┌─ bad.loss:1:1
  │
1 │ loss x
  │ ^^^^^^ this spec declares no model output
  │
  = hint: declare what the model predicts, e.g. `pred z : logit`
");
case!(index_shadows_a_pred, "loss x\ntask multiclass\ndata y : onehot [C]\npred z : vector [C]\npred s : real\nminimize mean(cce_logits(y, z) + sum[s](z[s]) + s)\n", @"
error[E0011]: index `s` shadows the pred `s`
  ┌─ bad.loss:6:38
  │
5 │ pred s : real
  │      - the pred
6 │ minimize mean(cce_logits(y, z) + sum[s](z[s]) + s)
  │                                      ^ inside the reduction this name would mean the index
  │
  = hint: name the index differently, such as c, k or j
");
case!(nested_reductions_share_an_index, "loss x\ntask multiclass\ndata y : onehot [C]\npred z : vector [C]\nminimize mean(cce_logits(y, z) + sum[c](sum[c](z[c])))\n", @"
error[E0011]: index `c` is already bound by an enclosing reduction
  ┌─ bad.loss:5:45
  │
5 │ minimize mean(cce_logits(y, z) + sum[c](sum[c](z[c])))
  │                                             ^ shadows the outer index
  │
  = hint: give the inner reduction its own index name
");
case!(label_index_outside_the_vector, "loss x\ntask multiclass\ndata y : label {0, 1, 5}\npred z : vector [2]\nminimize mean(logsumexp(z) - z[y])\n", @"
error[E0040]: `y` is not an index
  ┌─ bad.loss:5:32
  │
5 │ minimize mean(logsumexp(z) - z[y])
  │                                ^ y is a label in {0, 1, 5}
  │
  = hint: to pick a component by `y`, declare it as a class: data y : class [C]
");
case!(onehot_of_a_real, "loss x\ntask multiclass\ndata y : real\npred z : vector [3]\nminimize mean(logsumexp(z) - dot(onehot(y, 3), z))\n", @"
error[E0040]: `y` is not a class index
  ┌─ bad.loss:5:41
  │
5 │ minimize mean(logsumexp(z) - dot(onehot(y, 3), z))
  │                                         ^ y is any real number
  │
  = hint: onehot(k, C) takes a class [C] value or non-negative integer labels
");
case!(condition_on_a_param_in_the_objective_is_fine, "loss x\ntask regression\ndata y : real\npred s : real\nparam a = 1\nminimize if a > 0 then mean(mse(y, s)) else mean(mae(y, s))\n", @"");
case!(softmax_component_is_a_probability, "loss x\ntask binary\ndata y : label {0, 1}\npred z : vector [3]\nminimize mean(bce(y, softmax(z)[1]))\n", @"");

case!(def_size_names_are_the_defs_own, "loss x\ntask multiclass\ndata y : class [3]\npred z : vector [K]\ndata w : vector [5]\ndef pick(u : vector [K]) = dot(u, onehot(0, 5))\nminimize mean(cce_logits(y, z) + pick(w))\n", @"
error[E0043]: vectors of different sizes combined: K (of pick) and 5
  ┌─ bad.loss:6:28
  │
6 │ def pick(u : vector [K]) = dot(u, onehot(0, 5))
  │                            ^^^^^^^^^^^^^^^^^^^^ sizes K (of pick) and 5
  │
  = hint: a size name in a def's annotation stands for whatever size each call passes; annotate the literal size if the def needs one
");
case!(def_parameter_already_in_another_row, "loss x\ntask ranking\npred s : real\ndef h(x) = sum[k](x@k)\nminimize mean(sum[j](h(s@j)))\n", @"
error[E0046]: `@` inside `@`
  ┌─ bad.loss:4:19
  │
4 │ def h(x) = sum[k](x@k)
  │                   ^ already evaluated in another row
  │
  = hint: write x@j for one row; an expression refers to one row at a time
");
case!(let_refers_to_itself, "loss x\ntask regression\ndata y : real\npred f : real\nlet a = a + f\nminimize mean(mse(y, a))\n", @"
error[E0024]: `let a` refers to itself
  ┌─ bad.loss:5:9
  │
5 │ let a = a + f
  │         ^ the let being defined
  │
  = hint: a let is defined once, from values above it; give the new value its own name
");
case!(empty_point_interval, "loss x\ntask regression\ndata y : real (1, 1]\npred f : real\nminimize mean(mse(y, f))\n", @"
error[E0051]: the interval (1, 1] is empty
  ┌─ bad.loss:3:15
  │
3 │ data y : real (1, 1]
  │               ^^^^^^ lower bound must be below the upper bound
  │
  = hint: a single value is [1, 1]; a constant needs no interval
");
case!(estimand_mean_with_an_argument, "loss x\ntask regression\ndata y : real\npred f : real\nminimize mean(mse(y, f))\nexpect estimand = mean(2)\n", @"
error[E0015]: `mean` takes no argument
  ┌─ bad.loss:6:24
  │
6 │ expect estimand = mean(2)
  │                        ^ remove this
  │
  = hint: write estimand = mean; only quantile takes a level
");
// ------------------------------------------------------------ files

#[test]
fn missing_file_is_a_clean_error() {
    let e = Loss::from_file("/nonexistent/spec.loss").unwrap_err();
    insta::assert_snapshot!(e.render(Color::Never), @"error: cannot read `/nonexistent/spec.loss`: no such file");
}

#[test]
fn directory_is_a_clean_error() {
    let e = Loss::from_file(env!("CARGO_MANIFEST_DIR")).unwrap_err();
    assert!(
        e.render(Color::Never).contains("it is a directory"),
        "{}",
        e.render(Color::Never)
    );
}

#[test]
fn non_utf8_is_a_clean_error_with_a_location() {
    let dir = std::env::temp_dir().join(format!("lossc-utf8-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("latin1.loss");
    std::fs::write(&path, b"loss x\n# caf\xe9\n").unwrap();
    let e = Loss::from_file(&path).unwrap_err();
    let shown = e.render(Color::Never);
    assert!(
        shown.contains("not UTF-8 text: invalid byte at line 2, column 6"),
        "{shown}"
    );
}
