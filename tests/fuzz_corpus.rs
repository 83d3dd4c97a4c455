//! The committed fuzz corpora (`fuzz/corpus/<target>/`), every file through the very function
//! its fuzz target runs (`fuzz/src/lib.rs`, compiled here as a module), so each `cargo test`
//! replays what the fuzzers found — on stable, without libFuzzer — and the findings below stay
//! fixed. How to fuzz: README, "Fuzzing"; results: BENCHMARKS.md, "Fuzzing".

#[path = "../fuzz/src/lib.rs"]
mod fuzz;

use std::path::{Path, PathBuf};

/// Every file of `fuzz/corpus/<target>`, sorted; a corpus that went missing fails.
fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("corpus entry").path())
        .collect();
    files.sort();
    assert!(
        files.len() >= 10,
        "{}: only {} files",
        dir.display(),
        files.len()
    );
    files
        .into_iter()
        .map(|path| {
            let data = std::fs::read(&path).expect("corpus file");
            assert!(data.len() <= 64 * 1024, "{} is over 64 KiB", path.display());
            (path, data)
        })
        .collect()
}

/// Runs `run` on each corpus file of `target`, naming the file that panicked.
fn replay(target: &str, run: fn(&[u8])) {
    for (path, data) in corpus(target) {
        if let Err(panic) = std::panic::catch_unwind(|| run(&data)) {
            eprintln!("fuzz corpus file {} failed", path.display());
            std::panic::resume_unwind(panic);
        }
    }
}

#[test]
fn parsers_corpus() {
    replay("parsers", fuzz::parsers);
}

#[test]
fn replay_corpus() {
    replay("replay", fuzz::replay);
}

#[test]
fn config_corpus() {
    replay("config", fuzz::config);
}

#[test]
fn http_corpus() {
    replay("http", fuzz::http);
}

// Findings, each also a file of its target's corpus.

/// `config`: `RUST_LOG` with a space before a multi-byte character panicked inside
/// tracing-subscriber (it slices a directive at the offsets of its trimmed text); a space after
/// a comma silently filtered the wrong target (` barkeep=debug` → target ` barkee`). Each
/// directive is now trimmed before it is parsed and installed.
#[test]
fn rust_log_directives_are_trimmed() {
    fuzz::config(b"RUST_LOG= a\xc3\xa9=info");
    fuzz::config(b"RUST_LOG=\t\t\tx\xc6\x89,1=debug");
    let log_filter = |value: &'static str| {
        barkeep::config::Config::from_lookup(|name| (name == "RUST_LOG").then(|| value.into()))
            .map(|c| c.log_filter)
    };
    assert_eq!(log_filter(" a\u{e9}=info").expect("valid"), "a\u{e9}=info");
    assert_eq!(
        log_filter("warn, barkeep=debug ").expect("valid"),
        "warn,barkeep=debug"
    );
    assert!(log_filter("barkeep=loud").is_err());
}

/// `http`: a `tf` whose length overflows i64 milliseconds panicked in `Timeframe::from_str`
/// (in debug builds; release builds wrapped to an arbitrary timeframe). It is a 400 now.
#[test]
fn a_timeframe_too_long_is_a_bad_request() {
    let answer = fuzz::http_exchange(b"GET /signals/EURUSD?tf=99999999999999999d HTTP/1.1\r\n\r\n");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(text.contains("too long"), "{text}");
}
