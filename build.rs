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
//!   costs only some of the gain, never the build. Symbol names carry hashes of the dependency
//!   graph: rerun the script after dependencies change.
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
    if env::var("PROFILE").as_deref() != Ok("release") || !links_with_rust_lld() {
        return;
    }
    if glibc_applies_packed_relocations() {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    let dir = env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let order = Path::new(&dir).join(ORDER);
    // A source tree without benches/ builds the same binary, its code ungrouped.
    if order.is_file() && env::var_os("SESSIONGATE_NO_SYMBOL_ORDER").is_none() {
        println!(
            "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
            order.display()
        );
        println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    }
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
/// and no linker chosen by hand.
fn links_with_rust_lld() -> bool {
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
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let Ok(out) = Command::new(rustc).arg("--version").output() else {
        return false;
    };
    // "rustc 1.95.0 (59807616e 2026-04-14)"
    let version = String::from_utf8_lossy(&out.stdout);
    let minor = version
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.split('.').nth(1))
        .and_then(|m| m.parse::<u32>().ok());
    minor.is_some_and(|m| m >= 90)
}
