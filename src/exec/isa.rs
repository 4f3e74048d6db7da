//! Which instruction set the hot loops run on, chosen at run time.
//!
//! The release build targets baseline x86-64, so that one binary runs on
//! any machine; the loops that matter (the interpreter's instructions, the
//! input checks and every generated kernel) are also compiled for AVX2+FMA
//! and for AVX-512, and each call takes the widest tier this CPU has.
//! The AVX2 and AVX-512 tiers run the same operations in the same order
//! (fused multiply-adds included; only the vector width differs), so they
//! give the same bits. The baseline tier has no fused multiply-add and
//! may differ from them in the last bits.

use std::sync::atomic::{AtomicU8, Ordering};

/// An instruction-set tier, from narrowest to widest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Isa {
    /// Baseline x86-64 (SSE2), or any other architecture.
    Baseline,
    /// AVX2 with FMA: 256-bit vectors.
    Avx2,
    /// AVX-512 (F, BW, DQ and VL) with FMA: 512-bit vectors and mask
    /// registers.
    Avx512,
}

impl Isa {
    /// Every tier, narrowest first (`Isa::ALL[t as usize] == t`).
    pub const ALL: [Isa; 3] = [Isa::Baseline, Isa::Avx2, Isa::Avx512];

    /// The tier's name, as reports print it.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Baseline => "baseline",
            Isa::Avx2 => "avx2+fma",
            Isa::Avx512 => "avx512+fma",
        }
    }

    /// Every tier this CPU can run, narrowest first.
    pub fn available() -> Vec<Isa> {
        let top = detected();
        Isa::ALL.into_iter().filter(|&t| t <= top).collect()
    }

    fn from_u8(v: u8) -> Isa {
        Isa::ALL[usize::from(v).min(Isa::ALL.len() - 1)]
    }
}

/// `baseline`, `avx2` or `avx512` (or the names reports print), for
/// settings such as the benchmark's `LOSSC_BENCH_ISA`.
impl std::str::FromStr for Isa {
    type Err = String;

    fn from_str(s: &str) -> Result<Isa, String> {
        Isa::ALL
            .into_iter()
            .find(|t| t.name() == s || t.name().split('+').next() == Some(s))
            .ok_or_else(|| {
                format!("`{s}` is not an instruction-set tier (baseline, avx2 or avx512)")
            })
    }
}

/// The widest tier this CPU supports (the standard library caches the
/// CPUID probe, so this is a few relaxed loads).
pub fn detected() -> Isa {
    #[cfg(target_arch = "x86_64")]
    {
        use std::is_x86_feature_detected as has;
        if !(has!("avx2") && has!("fma")) {
            return Isa::Baseline;
        }
        if has!("avx512f") && has!("avx512bw") && has!("avx512dq") && has!("avx512vl") {
            return Isa::Avx512;
        }
        Isa::Avx2
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        Isa::Baseline
    }
}

/// The widest tier the process allows; `u8::MAX` until [`limit`] lowers it.
static LIMIT: AtomicU8 = AtomicU8::new(u8::MAX);

/// Caps the tier every evaluator in this process uses from now on (a cap
/// above what the CPU has changes nothing). For benchmarks that compare
/// tiers and tests that check they agree; results within the AVX2 and
/// AVX-512 tiers do not change with it.
pub fn limit(cap: Isa) {
    LIMIT.store(cap as u8, Ordering::Relaxed);
}

/// The tier the loops run on now: what the CPU has, within [`limit`].
pub fn active() -> Isa {
    detected().min(Isa::from_u8(LIMIT.load(Ordering::Relaxed)))
}

/// Whether the AVX2+FMA tier (or a wider one) is in use. Generated kernels
/// call it after [`avx512`], and kernels generated before AVX-512 was a
/// tier call only it, so they keep working.
pub fn avx2() -> bool {
    active() >= Isa::Avx2
}

/// Whether the AVX-512 tier is in use.
pub fn avx512() -> bool {
    active() >= Isa::Avx512
}

/// The name of the tier in use, for reports.
pub fn isa() -> &'static str {
    active().name()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiers_are_ordered_and_the_active_one_is_available() {
        assert!(Isa::Baseline < Isa::Avx2 && Isa::Avx2 < Isa::Avx512);
        assert!(Isa::available().contains(&active()));
        assert_eq!(Isa::available()[0], Isa::Baseline);
        assert_eq!(*Isa::available().last().unwrap(), detected());
        for t in Isa::ALL {
            assert_eq!(Isa::from_u8(t as u8), t);
            assert_eq!(Isa::ALL[t as usize], t);
            assert_eq!(t.name().parse::<Isa>(), Ok(t));
        }
        assert_eq!("avx2".parse::<Isa>(), Ok(Isa::Avx2));
        assert_eq!("avx512".parse::<Isa>(), Ok(Isa::Avx512));
    }

    #[test]
    fn an_unknown_tier_name_is_refused_with_the_choices() {
        for bad in ["", "avx", "AVX2", "sse2", "avx2+"] {
            assert_eq!(
                bad.parse::<Isa>(),
                Err(format!(
                    "`{bad}` is not an instruction-set tier (baseline, avx2 or avx512)"
                ))
            );
        }
    }
}
