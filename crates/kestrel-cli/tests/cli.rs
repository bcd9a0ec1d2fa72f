//! The CLI's scripted interface: the flags benchmarks and tests rely on.

use std::process::Command;

/// The tests run one `kestrel` process at a time, so timing checks are not disturbed by each other.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn kestrel(args: &[&str]) -> (bool, String, String) {
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let out = Command::new(env!("CARGO_BIN_EXE_kestrel"))
        .args(args)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn run_default_model_on_bundled_photos() {
    let (ok, out, err) = kestrel(&["run", "--top", "3", "--threads", "2"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("fox squirrel") && out.contains("espresso") && out.contains("Granny Smith"),
        "{out}"
    );
}

#[test]
fn run_json_npz_round_trip() {
    let dir = std::env::temp_dir().join(format!("kestrel-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let inp = dir.join("in.npz");
    let out1 = dir.join("out1.npz");
    let out2 = dir.join("out2.npz");
    let m = "assets/models/efficientnet_lite0.onnx";
    let (ok, out, err) = kestrel(&[
        "run",
        m,
        "--input",
        "assets/photos/coffee.png",
        "--save-input-npz",
        inp.to_str().unwrap(),
        "--output-npz",
        out1.to_str().unwrap(),
        "--json",
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["top"][0]["label"], "espresso");
    let (ok, _, err) = kestrel(&[
        "run",
        m,
        "--input-npz",
        inp.to_str().unwrap(),
        "--output-npz",
        out2.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert_eq!(std::fs::read(&out1).unwrap(), std::fs::read(&out2).unwrap());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bench_and_info_json() {
    let (ok, out, err) = kestrel(&[
        "bench",
        "assets/models/mtcnn_rnet.onnx",
        "--runs",
        "5",
        "--warmup",
        "1",
        "--threads",
        "1",
        "--json",
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(v["median_ms"].as_f64().unwrap() > 0.0);
    assert!(v["p90_ms"].as_f64().unwrap() >= v["median_ms"].as_f64().unwrap());
    assert_eq!(v["runs"], 5);
    let (ok, out, err) = kestrel(&["info", "assets/models/efficientnet_lite0.onnx", "--json"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    // independent count (scripts/check_costs.py): float initializers of the file
    assert_eq!(v["parameters"], 4631002);
    assert_eq!(v["macs"], 385187552u64);
    let macs = v["macs"].as_f64().unwrap();
    assert!((3.8e8..4.0e8).contains(&macs), "{macs}");
}

#[test]
fn errors_are_messages_not_panics() {
    let (ok, _, err) = kestrel(&["run", "Cargo.toml", "--input", "assets/photos"]);
    assert!(
        !ok && err.contains("invalid model") && !err.contains("panicked"),
        "{err}"
    );
    let (ok, _, err) = kestrel(&[
        "run",
        "assets/models/efficientnet_lite0.onnx",
        "--input",
        "/nope",
    ]);
    assert!(
        !ok && err.contains("/nope") && !err.contains("panicked"),
        "{err}"
    );
    let (ok, _, err) = kestrel(&[
        "bench",
        "assets/models/efficientnet_lite0.onnx",
        "--shape",
        "1x3x100x100",
    ]);
    assert!(
        !ok && err.contains("dimension 2 must be 224") && !err.contains("panicked"),
        "{err}"
    );
}

#[test]
fn profile_json_parses_and_layer_times_add_up() {
    let dir = std::env::temp_dir().join(format!("kestrel-prof-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("p.json");
    let svg = dir.join("p.svg");
    let png = dir.join("p.png");
    // The machines this runs on are shared: a single noisy run can move the end-to-end median by
    // more than the profiler's own error, so the 5% check gets up to three attempts.
    let mut attempts = Vec::new();
    let mut v = serde_json::Value::Null;
    for _ in 0..3 {
        let (ok, out, err) = kestrel(&[
            "profile",
            "assets/models/efficientnet_lite0.onnx",
            "--threads",
            "1",
            "--runs",
            "15",
            "--json",
            json.to_str().unwrap(),
            "--chart",
            svg.to_str().unwrap(),
        ]);
        assert!(ok, "{err}");
        assert!(
            out.contains("family") && out.contains("ESTIMATED") && out.contains("MEASURED"),
            "{out}"
        );
        v = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        let layers = v["layers"].as_array().unwrap();
        assert_eq!(layers.len(), 61, "steps after fusion");
        let sum: f64 = layers.iter().map(|l| l["time_ms"].as_f64().unwrap()).sum();
        let reported = v["sum_layers_ms"].as_f64().unwrap();
        assert!((sum - reported).abs() < 1e-6 * reported.max(1.0));
        let e2e = v["end_to_end_ms"].as_f64().unwrap();
        attempts.push((sum, e2e));
        if (sum / e2e - 1.0).abs() < 0.05 {
            break;
        }
    }
    assert!(
        attempts.iter().any(|(s, e)| (s / e - 1.0).abs() < 0.05),
        "layer sums vs end-to-end (ms) never within 5%: {attempts:?}"
    );
    let layers = v["layers"].as_array().unwrap();
    let macs: u64 = layers.iter().map(|l| l["macs"].as_u64().unwrap()).sum();
    assert_eq!(macs, 385187552);
    let shares: f64 = v["families"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["time_share"].as_f64().unwrap())
        .sum();
    assert!((shares - 1.0).abs() < 1e-6);
    assert!(std::fs::read_to_string(&svg).unwrap().contains("<svg"));
    // PNG from the saved profile's model, cheaper run
    let (ok, _, err) = kestrel(&[
        "profile",
        "assets/models/mtcnn_rnet.onnx",
        "--runs",
        "2",
        "--chart",
        png.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert_eq!(&std::fs::read(&png).unwrap()[1..4], b"PNG");
    let _ = std::fs::remove_dir_all(&dir);
}
