//! Two link settings for release builds of the binary, both for the memory an idle proxy holds
//! (BENCHMARKS.md), and both only where the linker is rustc's own LLD: Rust 1.90 and later link
//! x86_64-unknown-linux-gnu with it unless told otherwise. Elsewhere nothing changes.
//!
//! - The functions that run at start-up and on the first requests sit next to each other, in
//!   the order of `benches/startup.order` (a linker symbol order; `benches/startup-order.sh`
//!   writes it). An idle proxy's memory is mostly its own code, and the kernel maps code
//!   64 KiB around each page it faults in. Scattered over the 8 MiB text, the code a start
//!   touches kept about 6 MiB of it resident; grouped, it keeps about 2: idle PSS 10.5-10.6 MiB
//!   -> 6.5-6.6 MiB. A symbol the file names that no longer exists is skipped, so a stale order
//!   costs only some of the gain, never the build. Symbol names carry hashes of the compiler's
//!   version and of the dependency graph: built with Rust 1.97 instead of the 1.95 that wrote
//!   the order, 676 of its 2,011 names matched and an idle proxy kept 9.6 MiB instead of 6.0.
//!   The order's first line says what wrote it, and a release build that differs warns: rerun
//!   the script after changing compiler or dependencies.
//! - Relative relocations are packed (`-z pack-relative-relocs`, DT_RELR): the loader reads
//!   4 KiB of them at exec instead of 330 KiB of `.rela.dyn`, which otherwise stay resident.
//!   Only when the glibc linked against is 2.36 or later, which applies them; LLD then marks
//!   the binary as needing `GLIBC_ABI_DT_RELR`, so an older glibc refuses it by name at exec
//!   rather than running it unrelocated.

use std::env;
use std::path::Path;
use std::process::Command;

const ORDER: &str = "benches/startup.order";

fn main() {
    println!("cargo:rerun-if-changed={ORDER}");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=SESSIONGATE_NO_SYMBOL_ORDER");
    if env::var("PROFILE").as_deref() != Ok("release") {
        return;
    }
    let Some(rustc) = rustc_version() else {
        return;
    };
    if !links_with_rust_lld(&rustc) {
        return;
    }
    if glibc_applies_packed_relocations() {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    let dir = env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let order = Path::new(&dir).join(ORDER);
    // A source tree without benches/ builds the same binary, its code ungrouped.
    if order.is_file() && env::var_os("SESSIONGATE_NO_SYMBOL_ORDER").is_none() {
        // Relative: rustc, and the linker under it, run in the package's directory. Cargo
        // keeps this script's output across checkouts that share a target directory (a
        // benchmark run from a fresh clone, say), and reruns it only when a checkout's order
        // is newer than its last run: an absolute path would have a build link another
        // checkout's order, or fail once that checkout is deleted.
        println!("cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={ORDER}");
        println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
        warn_if_written_for_another_build(&order, Path::new(&dir), &rustc);
    }
}

/// The order's first line says which compiler and which Cargo.lock its names come from. Both
/// are part of every symbol's name (rustc hashes its own version into each crate's identity,
/// and a dependency's version or features rename its functions), so with another the binary
/// is the same but few names match and an idle proxy keeps several MiB more: say so, once per
/// build, rather than let the memory go unnoticed.
fn warn_if_written_for_another_build(order: &Path, dir: &Path, rustc: &str) {
    println!("cargo:rerun-if-changed=Cargo.lock");
    let written_for = std::fs::read_to_string(order)
        .ok()
        .and_then(|text| text.lines().next().map(str::to_owned))
        .unwrap_or_default();
    let lock = Command::new("sha256sum")
        .arg(dir.join("Cargo.lock"))
        .output()
        .ok()
        .filter(|out| out.status.success() && out.stdout.len() >= 16)
        .map(|out| String::from_utf8_lossy(&out.stdout[..16]).into_owned());
    let Some(lock) = lock else {
        return; // nothing to compare with: no warning rather than a wrong one
    };
    let this_build = format!("# {rustc}; Cargo.lock {lock}");
    if written_for != this_build {
        println!(
            "cargo:warning={} was written for another compiler or Cargo.lock ({:?}; this build: \
             {:?}). The binary is the same, but an idle proxy keeps more memory: rerun \
             benches/startup-order.sh",
            order.display(),
            written_for.trim_start_matches("# "),
            this_build.trim_start_matches("# ")
        );
    }
}

/// `rustc --version` of the compiler cargo runs, e.g. "rustc 1.95.0 (59807616e 2026-04-14)".
fn rustc_version() -> Option<String> {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = Command::new(rustc).arg("--version").output().ok()?;
    Some(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Whether the glibc this build links against (the build machine's: `links_with_rust_lld`
/// has ruled out a cross linker) is 2.36 or later, the first to apply DT_RELR.
fn glibc_applies_packed_relocations() -> bool {
    // "glibc 2.36"
    let Ok(out) = Command::new("getconf").arg("GNU_LIBC_VERSION").output() else {
        return false;
    };
    let version = String::from_utf8_lossy(&out.stdout);
    let mut numbers = version
        .trim()
        .strip_prefix("glibc ")
        .unwrap_or_default()
        .split('.')
        .map(|n| n.parse::<u32>().ok());
    matches!(
        (numbers.next(), numbers.next()),
        (Some(Some(major)), Some(Some(minor))) if (major, minor) >= (2, 36)
    )
}

/// Whether rustc links this target with its own LLD: x86_64 Linux (glibc), Rust 1.90 or later,
/// and no linker chosen by hand (`rustc_version` is what `rustc --version` printed).
fn links_with_rust_lld(rustc_version: &str) -> bool {
    let target = (
        env::var("CARGO_CFG_TARGET_ARCH"),
        env::var("CARGO_CFG_TARGET_OS"),
        env::var("CARGO_CFG_TARGET_ENV"),
    );
    if target != (Ok("x86_64".into()), Ok("linux".into()), Ok("gnu".into())) {
        return false;
    }
    let flags = env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    if flags.contains("linker")
        || env::var_os("CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER").is_some()
    {
        return false;
    }
    let minor = rustc_version
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.split('.').nth(1))
        .and_then(|m| m.parse::<u32>().ok());
    minor.is_some_and(|m| m >= 90)
}
