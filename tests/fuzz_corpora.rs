//! Replays every file of every fuzz corpus (`fuzz/corpus/<target>/`) through the same
//! code the fuzz targets run (`fuzz/src/lib.rs`, included below), on stable, as part of
//! `cargo test`. Fuzzing itself needs nightly and cargo-fuzz: see docs/fuzzing.md. A
//! crash found by fuzzing gets its input added to the corpus, so it stays fixed here.

#[path = "../fuzz/src/lib.rs"]
mod targets;

use std::path::Path;

/// A target body: bytes in, a panic on failure.
type Target = fn(&[u8]);

/// Every fuzz target, by the name of its corpus directory.
const TARGETS: &[(&str, Target)] = &[
    ("submission_command", targets::submission_command),
    ("submission_data", targets::submission_data),
    ("message", targets::message),
    ("smtp_reply", targets::smtp_reply),
    ("sasl_server", targets::sasl_server),
    ("sasl_client", targets::sasl_client),
    ("socks_reply", targets::socks_reply),
    ("mtasts", targets::mtasts),
    ("dane_tlsa", targets::dane_tlsa),
    ("spool_record", targets::spool_record),
];

#[test]
fn every_corpus_file_runs_without_panic() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    for (name, target) in TARGETS {
        let dir = root.join(name);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.expect("corpus entry").path())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "{}: empty corpus", dir.display());
        for file in files {
            let input = std::fs::read(&file).expect("corpus file");
            let outcome = std::panic::catch_unwind(|| target(&input));
            assert!(outcome.is_ok(), "{name}: {} panicked", file.display());
        }
    }
}

#[test]
fn every_corpus_has_a_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    for entry in std::fs::read_dir(&root).expect("fuzz/corpus") {
        let name = entry.expect("corpus dir").file_name();
        let name = name.to_string_lossy();
        assert!(
            TARGETS.iter().any(|(target, _)| *target == name),
            "fuzz/corpus/{name} has no target in tests/fuzz_corpora.rs"
        );
    }
}
