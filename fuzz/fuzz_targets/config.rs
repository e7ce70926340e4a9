//! Config parsing and validation under arbitrary input: an error or a config, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let base = std::path::Path::new("/nonexistent");
    if let Ok(config) = sessiongate::Config::from_toml(text, "fuzz.toml", base) {
        // What check-config prints must itself be valid.
        let printed = config.to_effective_toml();
        let reparsed: String = printed.lines().filter(|l| !l.starts_with('#')).collect::<Vec<_>>().join("\n");
        sessiongate::Config::from_toml(&reparsed, "effective.toml", base).expect("effective config reparses");
    }
});
