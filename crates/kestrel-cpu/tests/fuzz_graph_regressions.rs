//! Replays the `graph_shapes` fuzz corpus and its crash reproducers (fuzz/corpus/graph_shapes,
//! fuzz/regressions/graph_shapes) through the same harness: hostile shapes and attributes must
//! give errors, never panics.

#[path = "../../../fuzz/graph_from_bytes.rs"]
mod graph_from_bytes;

#[test]
fn graph_shapes_corpus_and_reproducers_never_panic() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut n = 0;
    for dir in ["regressions/graph_shapes", "corpus/graph_shapes"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        for e in entries.flatten() {
            let data = std::fs::read(e.path()).unwrap();
            graph_from_bytes::run_graph_bytes(&data);
            n += 1;
        }
    }
    assert!(
        n >= 3,
        "the reproducers are in the repository ({n} inputs replayed)"
    );
}
