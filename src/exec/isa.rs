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
        [Isa::Baseline, Isa::Avx2, Isa::Avx512]
            .into_iter()
            .filter(|&t| t <= top)
            .collect()
    }

    fn from_u8(v: u8) -> Isa {
        match v {
            0 => Isa::Baseline,
            1 => Isa::Avx2,
            _ => Isa::Avx512,
        }
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
        for t in [Isa::Baseline, Isa::Avx2, Isa::Avx512] {
            assert_eq!(Isa::from_u8(t as u8), t);
        }
    }
}
