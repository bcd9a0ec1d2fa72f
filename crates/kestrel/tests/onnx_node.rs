//! The official ONNX backend node tests for every op Kestrel claims.
//!
//! Data: `scripts/gen_onnx_node_tests.py` writes the cases (shipped as code in the `onnx` PyPI
//! package) to `data/onnx-node` (or `$KESTREL_ONNX_NODE_DIR`). Every case listed in
//! `tests/onnx_node_allowlist.txt` must pass; no case may panic; every claimed op must have a
//! passing case. Without the data the test is skipped, unless `KESTREL_REQUIRE_NODE_TESTS=1`
//! (set by CI), where it fails. `KESTREL_UPDATE_ALLOWLIST=1` rewrites the allow-list with the
//! cases that pass (the promotion tool).

use kestrel::{Model, Session, SessionOptions, Tensor};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const CLAIMED_OPS: &[&str] = &[
    "Conv",
    "ConvTranspose",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "GlobalMaxPool",
    "BatchNormalization",
    "Relu",
    "LeakyRelu",
    "PRelu",
    "Clip",
    "Sigmoid",
    "HardSigmoid",
    "HardSwish",
    "Tanh",
    "Exp",
    "Sqrt",
    "Softmax",
    "Gemm",
    "MatMul",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Concat",
    "Split",
    "Slice",
    "Reshape",
    "Flatten",
    "Transpose",
    "Squeeze",
    "Unsqueeze",
    "Pad",
    "Resize",
    "Constant",
    "ConstantOfShape",
    "Shape",
    "Gather",
    "GatherND",
    "Cast",
    "Identity",
    "Dropout",
    "ArgMax",
    "TopK",
    "ReduceMean",
    "Equal",
];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read_pb(p: &Path) -> Result<Tensor, String> {
    let bytes = std::fs::read(p).map_err(|e| e.to_string())?;
    kestrel_onnx::tensor_from_pb_bytes(&bytes)
        .map(|(_, t)| t)
        .map_err(|e| e.to_string())
}

fn numbered(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut v = Vec::new();
    for i in 0.. {
        let p = dir.join(format!("{prefix}_{i}.pb"));
        if !p.exists() {
            break;
        }
        v.push(p);
    }
    v
}

fn close(got: &Tensor, want: &Tensor, rtol: f64, atol: f64) -> Result<(), String> {
    if got.shape() != want.shape() {
        return Err(format!(
            "shape {:?}, expected {:?}",
            got.shape(),
            want.shape()
        ));
    }
    if got.dtype() != want.dtype() {
        return Err(format!("dtype {}, expected {}", got.dtype(), want.dtype()));
    }
    let (g, w) = (got.to_f64_vec(), want.to_f64_vec());
    for (i, (a, b)) in g.iter().zip(&w).enumerate() {
        let ok = (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= atol + rtol * b.abs();
        if !ok {
            return Err(format!("element {i}: {a} vs {b}"));
        }
    }
    Ok(())
}

/// With KESTREL_UPDATE_ALLOWLIST=1, rewrites an allowlist with the passing cases.
fn write_allowlist(path: &Path, what: &str, passing: &[String]) {
    if std::env::var("KESTREL_UPDATE_ALLOWLIST").as_deref() == Ok("1") {
        let mut text = format!(
            "# {what} (generated: KESTREL_UPDATE_ALLOWLIST=1 cargo test --test onnx_node)\n"
        );
        for c in passing {
            text.push_str(c);
            text.push('\n');
        }
        std::fs::write(path, text).unwrap();
    }
}

/// Runs one case; `Err` carries the reason it failed.
fn run_case(dir: &Path, rtol: f64, atol: f64) -> Result<(), String> {
    run_case_on(dir, rtol, atol, kestrel::Backend::Cpu, false)
}

/// Runs one case on a backend.
/// With `whole_gpu`, a GPU run whose graph had to be split (some node on the CPU) is an `Err`
/// naming those nodes.
fn run_case_on(
    dir: &Path,
    rtol: f64,
    atol: f64,
    backend: kestrel::Backend,
    whole_gpu: bool,
) -> Result<(), String> {
    let model = Model::load(dir.join("model.onnx")).map_err(|e| format!("load: {e}"))?;
    let mut session = Session::new(
        &model,
        SessionOptions {
            threads: 1,
            backend,
            ..Default::default()
        },
    )
    .map_err(|e| e.to_string())?;
    let mut k = 0;
    loop {
        let ds = dir.join(format!("test_data_set_{k}"));
        if !ds.exists() {
            break;
        }
        let inputs: Vec<Tensor> = numbered(&ds, "input")
            .iter()
            .map(|p| read_pb(p))
            .collect::<Result<_, _>>()?;
        let expected: Vec<Tensor> = numbered(&ds, "output")
            .iter()
            .map(|p| read_pb(p))
            .collect::<Result<_, _>>()?;
        let outs = session.run(inputs).map_err(|e| format!("run: {e}"))?;
        if let Some(plan) = session.gpu_plan().filter(|_| whole_gpu) {
            if let Some((_, _, why)) = plan.cpu_nodes().first() {
                return Err(why.clone());
            }
        }
        if outs.len() != expected.len() {
            return Err(format!(
                "{} outputs, expected {}",
                outs.len(),
                expected.len()
            ));
        }
        for (i, (g, w)) in outs.iter().zip(&expected).enumerate() {
            close(g, w, rtol.max(1e-4), atol.max(1e-5)).map_err(|e| format!("output {i}: {e}"))?;
        }
        k += 1;
    }
    Ok(())
}

#[test]
fn onnx_backend_node_tests() {
    let root = repo_root();
    let data = std::env::var_os("KESTREL_ONNX_NODE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("data/onnx-node"));
    let manifest_path = data.join("manifest.json");
    if !manifest_path.exists() {
        assert!(
            std::env::var("KESTREL_REQUIRE_NODE_TESTS").as_deref() != Ok("1"),
            "ONNX node test data missing at {}: run scripts/gen_onnx_node_tests.py",
            data.display()
        );
        eprintln!(
            "SKIPPED: no ONNX node test data at {} (run scripts/gen_onnx_node_tests.py)",
            data.display()
        );
        return;
    }
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest_path).unwrap()).unwrap();
    let allow_path = root.join("crates/kestrel/tests/onnx_node_allowlist.txt");
    let allow: Vec<String> = std::fs::read_to_string(&allow_path)
        .unwrap_or_default()
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();

    let mut per_op: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut passing = Vec::new();
    let mut panics = Vec::new();
    let mut failures = BTreeMap::new();
    for (case, meta) in manifest.as_object().unwrap() {
        let op = meta["op"].as_str().unwrap().to_string();
        let rtol = meta["rtol"].as_f64().unwrap_or(1e-3);
        let atol = meta["atol"].as_f64().unwrap_or(1e-7);
        let dir = data.join(case);
        let r = std::panic::catch_unwind(|| run_case(&dir, rtol, atol));
        let e = per_op.entry(op).or_default();
        e.1 += 1;
        match r {
            Ok(Ok(())) => {
                e.0 += 1;
                passing.push(case.clone());
            }
            Ok(Err(msg)) => {
                failures.insert(case.clone(), msg);
            }
            Err(_) => panics.push(case.clone()),
        }
    }
    println!("ONNX backend node tests, passing / selected per op:");
    for (op, (p, n)) in &per_op {
        println!("  {op:20} {p:3} / {n}");
    }
    println!(
        "total: {} / {} pass",
        passing.len(),
        manifest.as_object().unwrap().len()
    );
    for (c, m) in &failures {
        println!("  not passing: {c}: {m}");
    }
    write_allowlist(
        &allow_path,
        "ONNX backend node tests that must pass",
        &passing,
    );
    assert!(
        panics.is_empty(),
        "cases panicked (an engine bug): {panics:?}"
    );
    let regressions: Vec<&String> = allow.iter().filter(|c| !passing.contains(c)).collect();
    assert!(
        regressions.is_empty(),
        "allow-listed cases no longer pass: {regressions:?}"
    );
    for op in CLAIMED_OPS {
        let (p, _) = per_op.get(*op).copied().unwrap_or_default();
        assert!(p > 0, "claimed op {op} has no passing node test");
    }
}

/// Shared set-up of the GPU node tests: (repo root, data dir, manifest), or `None` (printed as
/// skipped) without test data or without a GPU adapter (a failure under KESTREL_REQUIRE_GPU).
fn gpu_node_test_setup() -> Option<(PathBuf, PathBuf, serde_json::Value)> {
    let root = repo_root();
    let data = std::env::var_os("KESTREL_ONNX_NODE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("data/onnx-node"));
    let Ok(text) = std::fs::read_to_string(data.join("manifest.json")) else {
        eprintln!("SKIPPED: no ONNX node test data");
        return None;
    };
    let probe = Model::load(root.join("assets/models/mtcnn_onet.onnx")).unwrap();
    if let Err(e) = Session::new(
        &probe,
        SessionOptions {
            backend: kestrel::Backend::Gpu,
            ..Default::default()
        },
    ) {
        assert!(
            std::env::var_os("KESTREL_REQUIRE_GPU").is_none(),
            "KESTREL_REQUIRE_GPU set but: {e}"
        );
        eprintln!("SKIPPED: no GPU adapter ({e})");
        return None;
    }
    let manifest: serde_json::Value = serde_json::from_str(&text).unwrap();
    Some((root, data, manifest))
}

/// Ops with GPU kernels (kestrel-gpu): their node tests also run on the GPU backend.
const GPU_OPS: &[&str] = &[
    "Conv",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "GlobalMaxPool",
    "Relu",
    "LeakyRelu",
    "Sigmoid",
    "HardSigmoid",
    "HardSwish",
    "Tanh",
    "Exp",
    "Sqrt",
    "Clip",
    "PRelu",
    "Softmax",
    "Gemm",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Concat",
    "Transpose",
    "Pad",
    "Reshape",
    "Flatten",
    "Squeeze",
    "Unsqueeze",
    "Identity",
];

/// The node tests of the GPU ops on the GPU backend (lavapipe in CI). A case the GPU plan
/// refuses (an integer type, an unsupported attribute) is counted apart from failures; every
/// case in `onnx_node_gpu_allowlist.txt` must pass.
#[test]
fn onnx_backend_node_tests_gpu() {
    let Some((root, data, manifest)) = gpu_node_test_setup() else {
        return;
    };
    let allow_path = root.join("crates/kestrel/tests/onnx_node_gpu_allowlist.txt");
    let allow: Vec<String> = std::fs::read_to_string(&allow_path)
        .unwrap_or_default()
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let (mut passing, mut refused, mut failed, mut panics) =
        (Vec::new(), 0, Vec::new(), Vec::new());
    for (case, meta) in manifest.as_object().unwrap() {
        let op = meta["op"].as_str().unwrap();
        if !GPU_OPS.contains(&op) {
            continue;
        }
        let rtol = meta["rtol"].as_f64().unwrap_or(1e-3);
        let atol = meta["atol"].as_f64().unwrap_or(1e-7);
        let dir = data.join(case);
        match std::panic::catch_unwind(|| {
            run_case_on(&dir, rtol, atol, kestrel::Backend::Gpu, true)
        }) {
            Ok(Ok(())) => passing.push(case.clone()),
            Ok(Err(m))
                if m.contains("GPU backend cannot run")
                    || m.contains("GPU backend takes")
                    || m.contains("is not f32 (the GPU stores")
                    || m.contains("not supported")
                    || m.contains("unsupported") =>
            {
                refused += 1
            }
            Ok(Err(m)) => failed.push(format!("{case}: {m}")),
            Err(_) => panics.push(case.clone()),
        }
    }
    println!(
        "GPU node tests: {} pass, {refused} refused by the GPU plan (named node and reason), {} fail",
        passing.len(),
        failed.len()
    );
    for f in &failed {
        println!("  GPU not passing: {f}");
    }
    write_allowlist(
        &allow_path,
        "ONNX node tests that must pass on the GPU backend",
        &passing,
    );
    assert!(panics.is_empty(), "GPU cases panicked: {panics:?}");
    let regressions: Vec<&String> = allow.iter().filter(|c| !passing.contains(c)).collect();
    assert!(
        regressions.is_empty(),
        "GPU allow-listed cases no longer pass: {regressions:?}"
    );
}

/// Graph split on every CPU-only op: the node tests of the claimed ops that have no GPU kernel
/// (Split, Slice, Resize, Gather, ArgMax, TopK, MatMul, ...) run with `--backend gpu`; their
/// nodes are cut out to the CPU and every CPU allow-listed case must still pass.
#[test]
fn onnx_backend_node_tests_gpu_split() {
    let Some((root, data, manifest)) = gpu_node_test_setup() else {
        return;
    };
    let allow: Vec<String> =
        std::fs::read_to_string(root.join("crates/kestrel/tests/onnx_node_allowlist.txt"))
            .unwrap_or_default()
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
    let (mut ran, mut failed) = (0, Vec::new());
    for (case, meta) in manifest.as_object().unwrap() {
        let op = meta["op"].as_str().unwrap();
        if GPU_OPS.contains(&op) || !allow.contains(case) {
            continue;
        }
        let rtol = meta["rtol"].as_f64().unwrap_or(1e-3);
        let atol = meta["atol"].as_f64().unwrap_or(1e-7);
        let dir = data.join(case);
        ran += 1;
        match std::panic::catch_unwind(|| {
            run_case_on(&dir, rtol, atol, kestrel::Backend::Gpu, false)
        }) {
            Ok(Ok(())) => {}
            Ok(Err(m)) => failed.push(format!("{case}: {m}")),
            Err(_) => failed.push(format!("{case}: panicked")),
        }
    }
    println!(
        "GPU split node tests: {ran} CPU-only-op cases, {} fail",
        failed.len()
    );
    assert!(ran > 50, "only {ran} cases selected");
    assert!(failed.is_empty(), "split GPU runs failed: {failed:#?}");
}
