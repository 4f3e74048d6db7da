//! Hostile input never panics or hangs the parser and checker: random
//! bytes, every example with tokens deleted, duplicated, swapped or
//! inserted, and very long or deeply nested specs. 12,000 cases in all.

use proptest::prelude::*;

fn examples() -> Vec<String> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "loss"))
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    out.sort();
    out
}

/// Splits a spec into tokens: words, numbers, single symbols, and runs of
/// whitespace, so that mutations act on what a user would type.
fn tokens(src: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = src.chars().peekable();
    while let Some(c) = chars.next() {
        let mut tok = c.to_string();
        let same_class = |a: char, b: char| {
            (a.is_alphanumeric() || a == '_' || a == '.')
                && (b.is_alphanumeric() || b == '_' || b == '.')
                || (a == ' ' && b == ' ')
        };
        while let Some(&n) = chars.peek() {
            if same_class(c, n) {
                tok.push(n);
                chars.next();
            } else {
                break;
            }
        }
        out.push(tok);
    }
    out
}

const VOCAB: &[&str] = &[
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    ",",
    ":",
    "=",
    "==",
    "@",
    "^",
    "-",
    "+",
    "*",
    "/",
    "\n",
    "if",
    "then",
    "else",
    "sum",
    "mean",
    "c",
    "j",
    "i",
    "inf",
    "let",
    "def",
    "minimize",
    "expect",
    "not",
    "1e999",
    "0",
    "-1",
    "\"",
    "#",
    "max",
    "softmax",
    "z",
    "y",
    "const",
    "onehot",
    "logsumexp",
    "sum[c]",
    "x@j",
];

/// Parses and checks; only the absence of a panic is asserted, and that an
/// error always comes with at least one located diagnostic.
fn survive(src: &str) {
    match lossc::Loss::from_named_source("fuzz.loss", src) {
        Ok(_) => {}
        Err(lossc::Error::Spec(report)) => {
            assert!(!report.diagnostics.is_empty());
            assert!(
                report.diagnostics.iter().all(|d| d.span.is_some()),
                "unlocated: {:#?}",
                report.diagnostics
            );
            let _ = report.render(lossc::Color::Never);
        }
        Err(other) => panic!("unexpected error kind: {other}"),
    }
}

#[derive(Clone, Debug)]
enum Mutation {
    Delete(usize),
    Duplicate(usize),
    Swap(usize),
    Insert(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<usize>().prop_map(Mutation::Delete),
        any::<usize>().prop_map(Mutation::Duplicate),
        any::<usize>().prop_map(Mutation::Swap),
        (any::<usize>(), 0..VOCAB.len()).prop_map(|(a, b)| Mutation::Insert(a, b)),
    ]
}

fn apply(mut toks: Vec<String>, muts: &[Mutation]) -> String {
    for m in muts {
        if toks.is_empty() {
            break;
        }
        let n = toks.len();
        match *m {
            Mutation::Delete(k) => {
                toks.remove(k % n);
            }
            Mutation::Duplicate(k) => {
                let t = toks[k % n].clone();
                toks.insert(k % n, t);
            }
            Mutation::Swap(k) if n > 1 => toks.swap(k % (n - 1), k % (n - 1) + 1),
            Mutation::Swap(_) => {}
            Mutation::Insert(k, v) => toks.insert(k % (n + 1), VOCAB[v].to_string()),
        }
    }
    toks.concat()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6000, ..ProptestConfig::default() })]

    #[test]
    fn mutated_examples_never_panic(which in any::<usize>(), muts in prop::collection::vec(mutation(), 1..6)) {
        let ex = examples();
        let src = apply(tokens(&ex[which % ex.len()]), &muts);
        survive(&src);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        survive(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn random_token_soup_never_panics(picks in prop::collection::vec(0..VOCAB.len(), 0..120)) {
        let src: Vec<&str> = picks.iter().map(|&k| VOCAB[k]).collect();
        survive(&format!("loss x\ntask binary\n{}", src.join(" ")));
    }
}

#[test]
fn deep_and_long_inputs_are_handled() {
    for depth in [10, 100, 150, 199, 200, 201, 1_000, 100_000] {
        let src = format!(
            "loss x\ntask regression\ndata y : real\npred f : real\nminimize mean({}y - f{})\n",
            "(".repeat(depth),
            ")".repeat(depth)
        );
        survive(&src);
    }
    for n in [150, 199, 200, 260] {
        let chain = vec!["huber(y, f)"; n].join(" + ");
        survive(&format!(
            "loss x\ntask regression\ndata y : real\npred f : real\nminimize mean({chain})\n"
        ));
        let tower = vec!["f"; n].join("^");
        survive(&format!(
            "loss x\ntask regression\ndata y : real\npred f : real\nminimize mean(y - {tower})\n"
        ));
    }
    let nested = format!("{}f{}", "sigmoid(".repeat(60), ")".repeat(60));
    survive(&format!(
        "loss x\ntask regression\ndata y : real\npred f : real\nminimize mean(mse(y, {nested}))\n"
    ));
    let chain = vec!["sigmoid(f)"; 5_000].join(" + ");
    survive(&format!(
        "loss x\ntask regression\ndata y : real\npred f : real\nminimize mean(y - {chain})\n"
    ));
    let minus = "-".repeat(10_000);
    survive(&format!(
        "loss x\ntask binary\ndata y : real\npred f : real\nminimize mean(if {}y == 1 then f else 0)\n",
        "not ".repeat(5_000)
    ));
    survive(&format!(
        "loss x\ntask regression\ndata y : real\npred f : real\nminimize mean({minus}f)\n"
    ));
    let lets: String = (0..2_000)
        .map(|k| format!("let a{k} = f * {k}\n"))
        .collect();
    survive(&format!(
        "loss x\ntask regression\ndata y : real\npred f : real\n{lets}minimize mean(a1999 - y)\n"
    ));
    survive(&"loss x\n".repeat(10_000));
    // Found by review: a long else-if chain, brackets times operators, a
    // deep chain of defs, defs that call the previous one twice (checked
    // once per argument type, not 2^22 times), long let chains.
    let chain = "if y > 0 then f else ".repeat(1_200);
    survive(&format!(
        "loss x\ntask regression\ndata y : real\npred f : real\nlet a = {chain}f\nminimize mean(a)\n"
    ));
    let nested = format!("{}f{}", "(- - - - - - - - - - ".repeat(30), ")".repeat(30));
    survive(&format!(
        "loss x\ntask regression\ndata y : real\npred f : real\nminimize mean({nested})\n"
    ));
    let defs: String = (1..700)
        .map(|k| format!("def f{k}(x) = f{}(x) + 1\n", k - 1))
        .collect();
    survive(&format!(
        "loss x\ntask regression\ndata y : real\npred f : real\ndef f0(x) = x\n{defs}minimize mean(f699(f))\n"
    ));
    let fan: String = (1..24)
        .map(|k| format!("def g{k}(x) = g{}(x) + g{}(x)\n", k - 1, k - 1))
        .collect();
    survive(&format!(
        "loss x\ntask regression\ndata y : real\npred f : real\ndef g0(x) = x\n{fan}minimize mean(g23(f) - y)\n"
    ));
    let long_name = "a".repeat(10_000);
    survive(&format!(
        "loss x\ntask regression\ndata {long_name}b : real\npred f : real\nminimize mean({long_name}c - f)\n"
    ));
    survive("");
    survive("\n\n\n");
    survive("loss x");
}
