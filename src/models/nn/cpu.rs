//! The CPU features the kernels here are picked by: detected once at run time, less those
//! switched off with `CLIPDEX_CPU_FEATURES` (e.g. `-avx512f,-avx2`), so that every path a CPU
//! has can be run and compared on one machine (the slower fallbacks included).
//!
//! A feature implies those it is built on: switching off `avx512f` switches off the AVX-512
//! BF16 and VNNI kernels too, and switching off `avx2` (or `fma`) the AVX-VNNI one. Off
//! x86-64 nothing is detected and every kernel takes its portable path.

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
}

impl Feature {
    /// Every feature, in the order `clipdex bench` prints them.
    pub const ALL: [Feature; 5] =
        [Feature::Avx512f, Feature::Avx512Bf16, Feature::Avx512Vnni, Feature::Avx2, Feature::AvxVnni];

    /// Its name in `CLIPDEX_CPU_FEATURES` and in `/proc/cpuinfo` (lower case).
    pub fn name(self) -> &'static str {
        match self {
            Feature::Avx512f => "avx512f",
            Feature::Avx512Bf16 => "avx512bf16",
            Feature::Avx512Vnni => "avx512vnni",
            Feature::Avx2 => "avx2",
            Feature::AvxVnni => "avxvnni",
        }
    }

    /// The features it needs besides itself.
    fn needs(self) -> &'static [Feature] {
        match self {
            Feature::Avx512Bf16 | Feature::Avx512Vnni => &[Feature::Avx512f],
            Feature::AvxVnni => &[Feature::Avx2],
            Feature::Avx512f | Feature::Avx2 => &[],
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
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }
}

/// The features switched off by a `CLIPDEX_CPU_FEATURES` value: a comma-separated list of
/// `-name` (`fma` counts as `avx2`); other entries are returned as unknown.
fn parse_disabled(spec: &str) -> (Vec<Feature>, Vec<String>) {
    let (mut off, mut unknown) = (Vec::new(), Vec::new());
    for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let name = entry.strip_prefix('-').map(str::to_ascii_lowercase);
        let feature = match name.as_deref() {
            Some("fma") => Some(Feature::Avx2),
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
fn table() -> &'static [(bool, bool); 5] {
    static TABLE: OnceLock<[(bool, bool); 5]> = OnceLock::new();
    TABLE.get_or_init(|| {
        let spec = std::env::var("CLIPDEX_CPU_FEATURES").unwrap_or_default();
        let (off, unknown) = parse_disabled(&spec);
        if !unknown.is_empty() {
            tracing::warn!(
                "CLIPDEX_CPU_FEATURES: ignoring {unknown:?}; write -NAME, NAME one of avx512f, avx512bf16, \
                 avx512vnni, avx2, fma, avxvnni"
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

/// The CPU's class for the speed tables: `AVX-512`, `AVX2+VNNI`, `AVX2` or `portable`, by the
/// features in use.
pub fn class() -> &'static str {
    if has(Feature::Avx512f) {
        "AVX-512"
    } else if has(Feature::AvxVnni) {
        "AVX2+VNNI"
    } else if has(Feature::Avx2) {
        "AVX2"
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

    /// Runs the kernel tests (all of `models::nn`) again in child processes with features
    /// switched off, so that every fallback this CPU can take is checked against its reference:
    /// the AVX2 kernels on an AVX-512 CPU, AVX2 int8 on a VNNI one, the portable code on any.
    #[test]
    fn kernel_tests_pass_with_features_switched_off() {
        if std::env::var_os("CLIPDEX_CPU_FEATURES").is_some() {
            return; // a child run: its parent runs the variants
        }
        let exe = std::env::current_exe().unwrap();
        for spec in ["-avx512f", "-avxvnni,-avx512vnni,-avx512bf16", "-avx512f,-avx2"] {
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
