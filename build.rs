//! Release builds of the binary put the functions that run at start-up and on the first
//! requests next to each other, in the order of `benches/startup.order` (a linker symbol order;
//! `benches/startup-order.sh` writes it).
//!
//! Why: an idle proxy's memory is mostly its own code, and the kernel maps code 64 KiB around
//! each page it faults in. Scattered over the 8 MiB text, the code a start touches kept about
//! 6 MiB of it resident; grouped, it keeps about 2: idle PSS 10.5-10.6 MiB -> 6.5-6.6 MiB
//! (BENCHMARKS.md). A symbol the file names that no longer exists is skipped, so a stale order
//! costs only some of the gain, never the build.
//!
//! Only where the linker is LLD, which takes `--symbol-ordering-file`: Rust 1.90 and later link
//! x86_64-unknown-linux-gnu with it unless told otherwise. Elsewhere nothing changes.

use std::env;
use std::path::Path;
use std::process::Command;

const ORDER: &str = "benches/startup.order";

fn main() {
    println!("cargo:rerun-if-changed={ORDER}");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=SESSIONGATE_NO_SYMBOL_ORDER");
    if env::var("PROFILE").as_deref() == Ok("release")
        && links_with_rust_lld()
        && env::var_os("SESSIONGATE_NO_SYMBOL_ORDER").is_none()
    {
        let dir = env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
        let order = Path::new(&dir).join(ORDER);
        if !order.is_file() {
            return; // a source tree without benches/: the same binary, its code ungrouped
        }
        println!(
            "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
            order.display()
        );
        println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    }
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
