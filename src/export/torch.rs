//! The PyTorch file: the emitter's torch flavour computes the objective and
//! lossc's gradients with tensor operations on the preds' device; a
//! `torch.autograd.Function` returns that gradient as its backward, and an
//! `nn.Module` holds the params.
//!
//! Half-precision preds (float16, bfloat16) are computed in float32, as
//! PyTorch's autocast does for losses, and the results are cast back, so a
//! log or exp never overflows in a 5-bit exponent.

use super::python::Emitter;
use super::{header, py_name, uses};
use crate::Loss;
use std::fmt::Write;

/// `focal_logits` -> `FocalLogitsLoss`.
fn class_name(spec: &str) -> String {
    let mut out = String::new();
    for part in spec.split('_').filter(|p| !p.is_empty()) {
        let mut cs = part.chars();
        if let Some(f) = cs.next() {
            out.extend(f.to_uppercase());
            out.push_str(cs.as_str());
        }
    }
    if !out.ends_with("Loss") {
        out.push_str("Loss");
    }
    out
}

/// The whole file, from the emitted body `e` and the gradient names.
pub fn file(loss: &Loss, e: &Emitter<'_>, grads: &[(String, String)], origin: &str) -> String {
    let c = loss.checked();
    let inputs: Vec<String> = c
        .data
        .iter()
        .chain(&c.preds)
        .map(|v| py_name(&v.name))
        .collect();
    let preds: Vec<String> = c.preds.iter().map(|v| py_name(&v.name)).collect();
    let pnames: Vec<String> = c.params.iter().map(|p| py_name(&p.name)).collect();
    let defaults: Vec<String> = c
        .params
        .iter()
        .map(|p| format!("{}={}", py_name(&p.name), Emitter::num_text(p.value)))
        .collect();
    let like = &preds[0];
    let class = class_name(&c.name);
    let notes = vec![
        format!(
            "Use: criterion = {class}({}); value = criterion({}); value.backward(). The backward pass is lossc's derived gradient, not autograd's trace of the forward computation.",
            defaults.join(", "),
            inputs.join(", ")
        ),
        "Tensors may be on any device and of any float dtype (the preds' decide); float16 and bfloat16 are computed in float32 and cast back. Data may be tensors, arrays or lists; labels may be integers. Gradients flow to the preds only, once (no double backward).".to_string(),
    ];
    let mut o = header(loss, "PyTorch", origin, &notes);
    let _ = writeln!(o, "\"\"\"\n\nimport torch\n");
    let _ = writeln!(
        o,
        "\ndef _softplus(x):\n    return torch.clamp(x, min=0.0) + torch.log1p(torch.exp(-torch.abs(x)))\n"
    );

    // value_and_grad: plain tensor code, no autograd needed.
    let kw = if defaults.is_empty() {
        String::new()
    } else {
        format!(", *, {}", defaults.join(", "))
    };
    let _ = writeln!(o, "\ndef value_and_grad({}{kw}):", inputs.join(", "));
    let _ = writeln!(
        o,
        "    \"\"\"The objective and its gradient with respect to each pred (same shapes and dtype).\"\"\""
    );
    let _ = writeln!(o, "    {like} = torch.as_tensor({like})");
    let _ = writeln!(o, "    out_dtype, device = {like}.dtype, {like}.device");
    let _ = writeln!(
        o,
        "    dtype = torch.promote_types(out_dtype, torch.float32)"
    );
    for a in &inputs {
        let _ = writeln!(o, "    {a} = torch.as_tensor({a}, device=device).to(dtype)");
    }
    for p in &pnames {
        let _ = writeln!(
            o,
            "    {p} = torch.as_tensor({p}, dtype=dtype, device=device)"
        );
    }
    if uses(&e.lines, "n") {
        let _ = writeln!(o, "    n = {like}.shape[0]");
    }
    for s in e.sizes() {
        if uses(&e.lines, s.split(" = ").next().unwrap_or("")) {
            let _ = writeln!(o, "    {s}");
        }
    }
    e.write(&mut o, "    ");
    let dict: Vec<String> = grads
        .iter()
        .map(|(p, g)| format!("\"{p}\": {g}.to(out_dtype)"))
        .collect();
    let _ = writeln!(o, "    return value.to(out_dtype), {{{}}}", dict.join(", "));

    // The autograd Function: forward computes everything, backward scales
    // the saved gradients by the incoming one.
    let all: Vec<String> = inputs
        .iter()
        .cloned()
        .chain(pnames.iter().cloned())
        .collect();
    let call_kw: Vec<String> = pnames.iter().map(|p| format!("{p}={p}")).collect();
    let call = if call_kw.is_empty() {
        inputs.join(", ")
    } else {
        format!("{}, {}", inputs.join(", "), call_kw.join(", "))
    };
    let _ = writeln!(o, "\n\nclass _Function(torch.autograd.Function):");
    let _ = writeln!(
        o,
        "    @staticmethod\n    def forward(ctx, {}):",
        all.join(", ")
    );
    let _ = writeln!(o, "        value, grads = value_and_grad({call})");
    let saved: Vec<String> = c
        .preds
        .iter()
        .map(|p| format!("grads[\"{}\"]", p.name))
        .collect();
    let _ = writeln!(o, "        ctx.save_for_backward({})", saved.join(", "));
    let _ = writeln!(o, "        return value\n");
    let _ = writeln!(
        o,
        "    @staticmethod\n    @torch.autograd.function.once_differentiable\n    def backward(ctx, g):"
    );
    let gnames: Vec<String> = preds.iter().map(|p| format!("grad_{p}")).collect();
    let unpack = if gnames.len() == 1 {
        format!("({},)", gnames[0])
    } else {
        format!("({})", gnames.join(", "))
    };
    let _ = writeln!(o, "        {unpack} = ctx.saved_tensors");
    let mut ret: Vec<String> = vec!["None".to_string(); c.data.len()];
    ret.extend(gnames.iter().map(|g| format!("g * {g}")));
    ret.extend(std::iter::repeat_n("None".to_string(), pnames.len()));
    let _ = writeln!(o, "        return {}", ret.join(", "));

    // The module: params in the constructor, inputs in forward.
    let _ = writeln!(o, "\n\nclass {class}(torch.nn.Module):");
    let _ = writeln!(
        o,
        "    \"\"\"`{}` as a loss module; its backward pass is lossc's derived gradient.\"\"\"\n",
        c.name
    );
    let init_args = if defaults.is_empty() {
        String::new()
    } else {
        format!(", {}", defaults.join(", "))
    };
    let _ = writeln!(o, "    def __init__(self{init_args}):");
    let _ = writeln!(o, "        super().__init__()");
    for p in &pnames {
        let _ = writeln!(o, "        self.{p} = float({p})");
    }
    let _ = writeln!(o, "\n    def forward(self, {}):", inputs.join(", "));
    let selfs: Vec<String> = pnames.iter().map(|p| format!("self.{p}")).collect();
    let mut fargs = inputs.clone();
    fargs.extend(selfs);
    let _ = writeln!(o, "        return _Function.apply({})", fargs.join(", "));
    if !pnames.is_empty() {
        let reprs: Vec<String> = pnames.iter().map(|p| format!("{p}={{self.{p}}}")).collect();
        let _ = writeln!(
            o,
            "\n    def extra_repr(self):\n        return f\"{}\"",
            reprs.join(", ")
        );
    }
    o
}

#[cfg(test)]
mod tests {
    use super::class_name;

    #[test]
    fn class_names_are_camel_case_losses() {
        assert_eq!(class_name("focal_logits"), "FocalLogitsLoss");
        assert_eq!(class_name("infonce"), "InfonceLoss");
        assert_eq!(class_name("my_loss"), "MyLoss");
        assert_eq!(class_name("x__y"), "XYLoss");
    }
}
