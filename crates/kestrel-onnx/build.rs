//! Generates the ONNX protobuf types from `proto/onnx.proto` (copied verbatim from the `onnx` 1.23
//! PyPI package) with prost; protox parses the .proto in pure Rust so no `protoc` is needed.

fn main() {
    println!("cargo:rerun-if-changed=proto/onnx.proto");
    let fds = protox::compile(["proto/onnx.proto"], ["proto"]).expect("parse onnx.proto");
    prost_build::Config::new()
        // bytes fields (raw tensor data) become slices of the file buffer: no copy while decoding
        .bytes(["."])
        .compile_fds(fds)
        .expect("generate onnx protobuf code");
}
