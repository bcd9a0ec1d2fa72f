//! Bad input gives a clear error, never a panic or a silently wrong answer.

mod common;
use common::*;
use kestrel::{Error, Model, Session, SessionOptions, Tensor};
use std::path::PathBuf;

fn assets() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../assets")
}

fn load_bytes(b: &[u8]) -> Result<Model, Error> {
    Model::from_bytes(b, "test")
}

/// A small valid model: y = Relu(Conv(x, W)) with x [1, 3, 8, 8].
fn conv_model(extra_attr: Vec<kestrel_onnx::proto::AttributeProto>, opset: i64) -> Vec<u8> {
    let mut attrs = vec![ints("kernel_shape", &[3, 3]), ints("pads", &[1, 1, 1, 1])];
    attrs.extend(extra_attr);
    model(
        vec![
            node("Conv", "conv1", &["x", "W"], &["c"], attrs),
            node("Relu", "relu1", &["c"], &["y"], vec![]),
        ],
        vec![value_info("x", 1, &[1, 3, 8, 8])],
        vec![value_info("y", 1, &[])],
        vec![f32_tensor("W", &[4, 3, 3, 3], values(108, 1))],
        opset,
    )
}

#[test]
fn truncated_garbage_and_empty_model_files() {
    let bytes = std::fs::read(assets().join("models/efficientnet_lite0.onnx")).unwrap();
    for cut in [10, 1000, bytes.len() / 2, bytes.len() - 3] {
        let e = load_bytes(&bytes[..cut]).unwrap_err();
        assert!(matches!(e, Error::InvalidModel(_)), "cut {cut}: {e}");
    }
    let e = load_bytes(b"this is not an onnx model at all, just text").unwrap_err();
    assert!(matches!(e, Error::InvalidModel(_)), "{e}");
    let e = load_bytes(&[]).unwrap_err();
    assert!(e.to_string().contains("empty"), "{e}");
    let e = Model::load("/definitely/not/here.onnx").unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e}");
    // random bytes of many seeds: errors, never panics
    for seed in 0..200u32 {
        let junk: Vec<u8> = values(64 + seed as usize, seed)
            .iter()
            .map(|v| (v * 127.0) as i8 as u8)
            .collect();
        let _ = load_bytes(&junk);
    }
}

#[test]
fn unsupported_op_names_node_op_and_opset() {
    let m = model(
        vec![node("LSTM", "my_lstm", &["x"], &["y"], vec![])],
        vec![value_info("x", 1, &[1, 3])],
        vec![value_info("y", 1, &[])],
        vec![],
        13,
    );
    let e = load_bytes(&m).unwrap_err();
    let s = e.to_string();
    assert!(matches!(e, Error::Unsupported { .. }), "{s}");
    assert!(
        s.contains("my_lstm") && s.contains("LSTM") && s.contains("13"),
        "{s}"
    );

    let mut n = node("Foo", "custom", &["x"], &["y"], vec![]);
    n.domain = Some("com.example".into());
    let m = model(
        vec![n],
        vec![value_info("x", 1, &[1])],
        vec![value_info("y", 1, &[])],
        vec![],
        13,
    );
    assert!(load_bytes(&m)
        .unwrap_err()
        .to_string()
        .contains("com.example"));
}

#[test]
fn unsupported_attribute_value_names_node() {
    let a = kestrel_onnx::proto::AttributeProto {
        name: Some("auto_pad".into()),
        r#type: Some(3),
        s: Some(b"SOMETIMES".to_vec().into()),
        ..Default::default()
    };
    let e = load_bytes(&conv_model(vec![a], 13)).unwrap_err();
    let s = e.to_string();
    assert!(
        s.contains("conv1") && s.contains("Conv") && s.contains("SOMETIMES"),
        "{s}"
    );
}

#[test]
fn unknown_attributes_are_ignored_and_kept() {
    let m = load_bytes(&conv_model(vec![int("some_future_attribute", 7)], 13)).unwrap();
    let n = &m.graph().nodes[0];
    assert!(n.attrs.contains_key("some_future_attribute"));
}

#[test]
fn too_old_opset_is_refused() {
    let e = load_bytes(&conv_model(vec![], 6)).unwrap_err();
    assert!(e.to_string().contains("opset 6"), "{e}");
}

#[test]
fn wrong_input_shape_dtype_count_and_name() {
    let m = load_bytes(&conv_model(vec![], 13)).unwrap();
    let mut s = Session::new(&m, SessionOptions::default()).unwrap();
    let e = s
        .run(vec![
            Tensor::zeros(kestrel::DType::F32, vec![1, 3, 9, 8]).unwrap()
        ])
        .unwrap_err();
    assert!(
        matches!(&e, Error::Input { name, .. } if name == "x"),
        "{e}"
    );
    assert!(e.to_string().contains("dimension 2 must be 8"), "{e}");
    let e = s
        .run(vec![
            Tensor::zeros(kestrel::DType::F32, vec![3, 8, 8]).unwrap()
        ])
        .unwrap_err();
    assert!(e.to_string().contains("rank"), "{e}");
    let e = s
        .run(vec![
            Tensor::zeros(kestrel::DType::I64, vec![1, 3, 8, 8]).unwrap()
        ])
        .unwrap_err();
    assert!(
        matches!(&e, Error::Input { name, .. } if name == "x"),
        "{e}"
    );
    let e = s.run(vec![]).unwrap_err();
    assert!(matches!(e, Error::Input { .. }), "{e}");
    let e = s.run_named(vec![]).unwrap_err();
    assert!(e.to_string().contains("missing"), "{e}");
    let x = Tensor::zeros(kestrel::DType::F32, vec![1, 3, 8, 8]).unwrap();
    let e = s
        .run_named(vec![("x".into(), x.clone()), ("extra".into(), x.clone())])
        .unwrap_err();
    assert!(e.to_string().contains("extra"), "{e}");
    // and the session still works afterwards
    assert_eq!(s.run(vec![x]).unwrap()[0].shape(), &[1, 4, 8, 8]);
}

#[test]
fn inconsistent_model_errors_name_the_node() {
    // weight for 5 input channels, input has 3
    let m = model(
        vec![node("Conv", "bad_conv", &["x", "W"], &["y"], vec![])],
        vec![value_info("x", 1, &[1, 3, 8, 8])],
        vec![value_info("y", 1, &[])],
        vec![f32_tensor("W", &[4, 5, 3, 3], values(180, 2))],
        13,
    );
    let m = load_bytes(&m).unwrap();
    let e = Session::new(&m, SessionOptions::default())
        .unwrap()
        .run(vec![
            Tensor::zeros(kestrel::DType::F32, vec![1, 3, 8, 8]).unwrap()
        ])
        .unwrap_err();
    assert!(e.to_string().contains("bad_conv"), "{e}");
}

#[test]
fn huge_or_inconsistent_tensors_are_refused_before_allocating() {
    let huge = kestrel_onnx::proto::TensorProto {
        name: Some("W".into()),
        dims: vec![100_000, 100_000, 10],
        data_type: Some(1),
        raw_data: Some(vec![0u8; 16].into()),
        ..Default::default()
    };
    let m = model(
        vec![node("Relu", "r", &["x"], &["y"], vec![])],
        vec![value_info("x", 1, &[1])],
        vec![value_info("y", 1, &[])],
        vec![huge],
        13,
    );
    let e = load_bytes(&m).unwrap_err();
    assert!(matches!(e, Error::TooLarge(_)), "{e}");

    let short = kestrel_onnx::proto::TensorProto {
        name: Some("W".into()),
        dims: vec![4, 4],
        data_type: Some(1),
        raw_data: Some(vec![0u8; 60].into()),
        ..Default::default()
    };
    let m = model(
        vec![node("Relu", "r", &["x"], &["y"], vec![])],
        vec![value_info("x", 1, &[1])],
        vec![value_info("y", 1, &[])],
        vec![short],
        13,
    );
    assert!(load_bytes(&m)
        .unwrap_err()
        .to_string()
        .contains("needs 64 bytes"));

    let neg = i64_tensor("s", &[-1], vec![]);
    let m = model(
        vec![node("Relu", "r", &["x"], &["y"], vec![])],
        vec![value_info("x", 1, &[1])],
        vec![value_info("y", 1, &[])],
        vec![neg],
        13,
    );
    assert!(load_bytes(&m).is_err());
}

#[test]
fn dangling_inputs_outputs_and_cycles() {
    let m = model(
        vec![node("Relu", "r", &["nowhere"], &["y"], vec![])],
        vec![value_info("x", 1, &[1])],
        vec![value_info("y", 1, &[])],
        vec![],
        13,
    );
    assert!(load_bytes(&m).unwrap_err().to_string().contains("nowhere"));
    let m = model(
        vec![node("Relu", "r", &["x"], &["y"], vec![])],
        vec![value_info("x", 1, &[1])],
        vec![value_info("zzz", 1, &[])],
        vec![],
        13,
    );
    assert!(load_bytes(&m).unwrap_err().to_string().contains("zzz"));
    let m = model(
        vec![
            node("Relu", "a", &["b_out"], &["a_out"], vec![]),
            node("Relu", "b", &["a_out"], &["b_out"], vec![]),
        ],
        vec![value_info("x", 1, &[1])],
        vec![value_info("a_out", 1, &[])],
        vec![],
        13,
    );
    assert!(load_bytes(&m).unwrap_err().to_string().contains("cycle"));
}

#[test]
fn external_data_inside_folder_loads_and_escapes_are_refused() {
    let dir = std::env::temp_dir().join(format!("kestrel-ext-{}", std::process::id()));
    let inner = dir.join("model");
    std::fs::create_dir_all(&inner).unwrap();
    let w: Vec<f32> = values(108, 3);
    let raw: Vec<u8> = w.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(
        inner.join("weights.bin"),
        [vec![0u8; 8], raw.clone()].concat(),
    )
    .unwrap();
    std::fs::write(dir.join("outside.bin"), &raw).unwrap();
    #[cfg(unix)]
    {
        let _ = std::fs::remove_file(inner.join("link.bin"));
        std::os::unix::fs::symlink(dir.join("outside.bin"), inner.join("link.bin")).unwrap();
    }
    let ext = |loc: &str, offset: usize| kestrel_onnx::proto::TensorProto {
        name: Some("W".into()),
        dims: vec![4, 3, 3, 3],
        data_type: Some(1),
        data_location: Some(1),
        external_data: vec![
            kestrel_onnx::proto::StringStringEntryProto {
                key: Some("location".into()),
                value: Some(loc.into()),
            },
            kestrel_onnx::proto::StringStringEntryProto {
                key: Some("offset".into()),
                value: Some(offset.to_string()),
            },
        ],
        ..Default::default()
    };
    let write = |t| {
        let m = model(
            vec![node("Conv", "c", &["x", "W"], &["y"], vec![])],
            vec![value_info("x", 1, &[1, 3, 5, 5])],
            vec![value_info("y", 1, &[])],
            vec![t],
            13,
        );
        let p = inner.join("m.onnx");
        std::fs::write(&p, m).unwrap();
        Model::load(&p)
    };
    let m = write(ext("weights.bin", 8)).unwrap();
    let wid = m.graph().value_by_name("W").unwrap();
    assert_eq!(m.graph().constant(wid).unwrap().as_f32().unwrap(), &w[..]);
    for bad in ["../outside.bin", "/etc/passwd"] {
        let e = write(ext(bad, 0)).unwrap_err();
        assert!(
            e.to_string().contains("leaves the model's folder"),
            "{bad}: {e}"
        );
    }
    #[cfg(unix)]
    {
        let e = write(ext("link.bin", 0)).unwrap_err();
        assert!(e.to_string().contains("outside"), "{e}");
    }
    // offset beyond the file
    assert!(write(ext("weights.bin", 100))
        .unwrap_err()
        .to_string()
        .contains("exceeds file size"));
    let _ = std::fs::remove_dir_all(&dir);
}
