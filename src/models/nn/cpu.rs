//! The CPU features the kernels here are picked by: detected once at run time, less those
//! switched off with `CLIPDEX_CPU_FEATURES` (e.g. `-avx512f,-avx2`, or `-i8mm,-bf16,-dotprod,-neon`
//! on ARM), so that every path a CPU has can be run and compared on one machine (the slower
//! fallbacks included).
//!
//! A feature implies those it is built on: switching off `avx512f` switches off the AVX-512
//! BF16 and VNNI kernels too, switching off `avx2` (or `fma`) the AVX-VNNI one, switching off
//! `dotprod` the `smmla` one (i8mm), and switching off `neon` (`asimd`) every ARM kernel. Each
//! is detected only on its architecture (x86-64 or aarch64); elsewhere every kernel takes its
//! portable path.

use std::sync::OnceLock;

/// A feature that decides which kernel runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feature {
    /// AVX-512 F: the 16-wide f32 kernels.
    Avx512f,
    /// AVX-512 BF16 (`vdpbf16ps`): `--precision bf16`.
    Avx512Bf16,
    /// AVX-512 VNNI (`vpdpbusd`, 64 bytes): `--precision int8`.
    Avx512Vnni,
    /// AVX2 with FMA: the 8-wide f32 kernels and int8 with `vpmaddubsw`.
    Avx2,
    /// AVX-VNNI (`vpdpbusd`, VEX, 32 bytes; Intel Alder Lake and later, AMD Zen 5): int8.
    AvxVnni,
    /// NEON (Advanced SIMD) on aarch64: the 4-wide f32 kernels and int8 with widening
    /// multiplies. Every 64-bit ARM CPU has it; switching it off runs the portable code.
    Neon,
    /// The dot-product extension (`sdot`; ARMv8.2 and later, Apple M1 and later): int8.
    Dotprod,
    /// The int8 matrix multiply (`smmla`; ARMv8.6, Apple M2 and later, Neoverse V1/N2,
    /// Cortex-A710 and later): int8, a 2×8 by 8×2 product per instruction. Counted as needing
    /// `dotprod` (every such CPU has it), so that `-dotprod` reaches the widening fallback.
    I8mm,
    /// BFloat16 (`bfmmla`; ARMv8.6, Apple M2 and later, Neoverse V1/N2): `--precision bf16`.
    Bf16,
}

impl Feature {
    /// Every feature, in the order `clipdex bench` prints them.
    pub const ALL: [Feature; 9] = [
        Feature::Avx512f,
        Feature::Avx512Bf16,
        Feature::Avx512Vnni,
        Feature::Avx2,
        Feature::AvxVnni,
        Feature::Neon,
        Feature::Dotprod,
        Feature::I8mm,
        Feature::Bf16,
    ];

    /// Its name in `CLIPDEX_CPU_FEATURES` and in `/proc/cpuinfo` (lower case).
    pub fn name(self) -> &'static str {
        match self {
            Feature::Avx512f => "avx512f",
            Feature::Avx512Bf16 => "avx512bf16",
            Feature::Avx512Vnni => "avx512vnni",
            Feature::Avx2 => "avx2",
            Feature::AvxVnni => "avxvnni",
            Feature::Neon => "neon",
            Feature::Dotprod => "dotprod",
            Feature::I8mm => "i8mm",
            Feature::Bf16 => "bf16",
        }
    }

    /// Whether it belongs to the architecture this build is for (`clipdex bench` lists those).
    pub fn of_this_architecture(self) -> bool {
        const ARM: bool = cfg!(target_arch = "aarch64");
        const X86: bool = cfg!(target_arch = "x86_64");
        match self {
            Feature::Neon | Feature::Dotprod | Feature::I8mm | Feature::Bf16 => ARM,
            _ => X86,
        }
    }

    /// The features it needs besides itself.
    fn needs(self) -> &'static [Feature] {
        match self {
            Feature::Avx512Bf16 | Feature::Avx512Vnni => &[Feature::Avx512f],
            Feature::AvxVnni => &[Feature::Avx2],
            Feature::Dotprod | Feature::Bf16 => &[Feature::Neon],
            Feature::I8mm => &[Feature::Dotprod],
            Feature::Avx512f | Feature::Avx2 | Feature::Neon => &[],
        }
    }

    /// Whether the CPU reports it.
    fn detect(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            match self {
                Feature::Avx512f => has!("avx512f"),
                Feature::Avx512Bf16 => has!("avx512bf16"),
                Feature::Avx512Vnni => has!("avx512vnni"),
                Feature::Avx2 => has!("avx2") && has!("fma"),
                Feature::AvxVnni => has!("avxvnni"),
                Feature::Neon | Feature::Dotprod | Feature::I8mm | Feature::Bf16 => false,
            }
        }
        #[cfg(target_arch = "aarch64")]
        {
            use std::arch::is_aarch64_feature_detected as has;
            match self {
                Feature::Neon => has!("neon"),
                Feature::Dotprod => has!("dotprod"),
                Feature::I8mm => has!("i8mm"),
                Feature::Bf16 => has!("bf16"),
                _ => false,
            }
        }
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        {
            false
        }
    }
}

/// The features switched off by a `CLIPDEX_CPU_FEATURES` value: a comma-separated list of
/// `-name` (`fma` counts as `avx2`, `asimd` as `neon`); other entries are returned as unknown.
fn parse_disabled(spec: &str) -> (Vec<Feature>, Vec<String>) {
    let (mut off, mut unknown) = (Vec::new(), Vec::new());
    for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let name = entry.strip_prefix('-').map(str::to_ascii_lowercase);
        let feature = match name.as_deref() {
            Some("fma") => Some(Feature::Avx2),
            Some("asimd") => Some(Feature::Neon),
            Some(name) => Feature::ALL.into_iter().find(|f| f.name() == name),
            None => None,
        };
        match feature {
            Some(f) => off.push(f),
            None => unknown.push(entry.to_string()),
        }
    }
    (off, unknown)
}

/// Whether `feature` is on, given what was detected and what is switched off.
fn enabled(feature: Feature, detected: impl Fn(Feature) -> bool + Copy, off: &[Feature]) -> bool {
    detected(feature) && !off.contains(&feature) && feature.needs().iter().all(|&f| enabled(f, detected, off))
}

/// The features in use, detected once (as `[detected, in use]` per [`Feature::ALL`]).
fn table() -> &'static [(bool, bool); Feature::ALL.len()] {
    static TABLE: OnceLock<[(bool, bool); Feature::ALL.len()]> = OnceLock::new();
    TABLE.get_or_init(|| {
        let spec = std::env::var("CLIPDEX_CPU_FEATURES").unwrap_or_default();
        let (off, unknown) = parse_disabled(&spec);
        if !unknown.is_empty() {
            tracing::warn!(
                "CLIPDEX_CPU_FEATURES: ignoring {unknown:?}; write -NAME, NAME one of avx512f, avx512bf16, \
                 avx512vnni, avx2, fma, avxvnni, neon, dotprod, i8mm, bf16"
            );
        }
        Feature::ALL.map(|f| (f.detect(), enabled(f, Feature::detect, &off)))
    })
}

/// Whether the kernels built on `feature` run (detected and not switched off).
pub fn has(feature: Feature) -> bool {
    let i = Feature::ALL.iter().position(|&f| f == feature).unwrap_or(0);
    table()[i].1
}

/// Whether the CPU reports `feature`, switched off or not.
pub fn detected(feature: Feature) -> bool {
    let i = Feature::ALL.iter().position(|&f| f == feature).unwrap_or(0);
    table()[i].0
}

/// The CPU's class for the speed tables: `AVX-512`, `AVX2+VNNI`, `AVX2`, `NEON+i8mm`,
/// `NEON+dotprod`, `NEON` or `portable`, by the features in use (`+bf16` after an ARM class
/// whose CPU has bf16).
pub fn class() -> &'static str {
    if has(Feature::Avx512f) {
        "AVX-512"
    } else if has(Feature::AvxVnni) {
        "AVX2+VNNI"
    } else if has(Feature::Avx2) {
        "AVX2"
    } else if has(Feature::Neon) {
        match (has(Feature::I8mm), has(Feature::Dotprod), has(Feature::Bf16)) {
            (true, _, true) => "NEON+i8mm+bf16",
            (true, _, false) => "NEON+i8mm",
            (false, true, true) => "NEON+dotprod+bf16",
            (false, true, false) => "NEON+dotprod",
            (false, false, true) => "NEON+bf16",
            (false, false, false) => "NEON",
        }
    } else {
        "portable"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_switched_off_features() {
        let (off, unknown) = parse_disabled(" -avx512f,-AVX2, avx2,-sse9,,-fma");
        assert_eq!(off, vec![Feature::Avx512f, Feature::Avx2, Feature::Avx2]);
        assert_eq!(unknown, vec!["avx2".to_string(), "-sse9".to_string()]);
        assert_eq!(parse_disabled(""), (vec![], vec![]));
    }

    #[test]
    fn switching_a_feature_off_switches_off_what_needs_it() {
        let all = |_| true;
        assert!(enabled(Feature::Avx512Vnni, all, &[]));
        assert!(!enabled(Feature::Avx512Vnni, all, &[Feature::Avx512f]));
        assert!(!enabled(Feature::Avx512Bf16, all, &[Feature::Avx512f]));
        assert!(enabled(Feature::Avx2, all, &[Feature::Avx512f]));
        assert!(!enabled(Feature::AvxVnni, all, &[Feature::Avx2]));
        assert!(!enabled(Feature::AvxVnni, |f| f != Feature::Avx2, &[]));
        assert!(!enabled(Feature::Dotprod, all, &[Feature::Neon]));
        assert!(enabled(Feature::Neon, all, &[Feature::Dotprod]));
        assert_eq!(parse_disabled("-asimd,-DOTPROD").0, vec![Feature::Neon, Feature::Dotprod]);
        assert!(enabled(Feature::I8mm, all, &[Feature::Bf16]));
        assert!(!enabled(Feature::I8mm, all, &[Feature::Dotprod]));
        assert!(!enabled(Feature::I8mm, all, &[Feature::Neon]));
        assert!(!enabled(Feature::Bf16, all, &[Feature::Neon]));
        assert!(enabled(Feature::Bf16, all, &[Feature::Dotprod, Feature::I8mm]));
        assert_eq!(parse_disabled("-i8mm,-BF16").0, vec![Feature::I8mm, Feature::Bf16]);
    }

    #[test]
    fn features_switched_off_in_this_process_are_off() {
        let (off, _) = parse_disabled(&std::env::var("CLIPDEX_CPU_FEATURES").unwrap_or_default());
        for f in off {
            assert!(!has(f), "{} is switched off", f.name());
        }
        for f in Feature::ALL {
            assert!(!has(f) || detected(f), "{} in use without being detected", f.name());
        }
    }

    /// The `CLIPDEX_CPU_FEATURES` values that reach every fallback this architecture has.
    const FALLBACKS: &[&str] = if cfg!(target_arch = "aarch64") {
        &["-i8mm,-bf16", "-dotprod", "-neon"]
    } else {
        &["-avx512f", "-avxvnni,-avx512vnni,-avx512bf16", "-avx512f,-avx2"]
    };

    /// Runs the kernel tests (all of `models::nn`) again in child processes with features
    /// switched off, so that every fallback this CPU can take is checked against its reference:
    /// the AVX2 kernels on an AVX-512 CPU, AVX2 int8 on a VNNI one, NEON's widening int8 on an
    /// ARM with `sdot`, `sdot` and f32 on one with i8mm and bf16, the portable code on any.
    /// (Under qemu-user, which cannot start a child of another architecture without binfmt, CI
    /// sets the variable and runs each variant.)
    #[test]
    fn kernel_tests_pass_with_features_switched_off() {
        if std::env::var_os("CLIPDEX_CPU_FEATURES").is_some() {
            return; // a child run: its parent runs the variants
        }
        let exe = std::env::current_exe().unwrap();
        for spec in FALLBACKS {
            let out = std::process::Command::new(&exe)
                .args(["models::nn::", "--skip", "kernel_tests_pass_with_features_switched_off"])
                .env("CLIPDEX_CPU_FEATURES", spec)
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "with CLIPDEX_CPU_FEATURES={spec}:\n{text}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(text.contains("features_switched_off_in_this_process_are_off ... ok"), "{spec}: {text}");
        }
    }
}
