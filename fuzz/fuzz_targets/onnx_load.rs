//! ONNX loading and graph preparation on arbitrary bytes: errors are fine, panics, hangs and
//! out-of-memory kills are not.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(model) = kestrel::Model::from_bytes(data, "fuzz") {
        // shape inference on whatever shapes the file claims (free dims at a small size)
        let shapes = model.default_input_shapes(8);
        let _ = model.summary(&shapes);
    }
});
