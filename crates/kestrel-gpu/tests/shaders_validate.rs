//! Every WGSL shader in every storage variant parses and validates with naga (no GPU needed).

use kestrel_gpu::{Shader, Storage};

#[test]
fn every_shader_variant_validates() {
    for storage in Storage::ALL {
        for s in Shader::ALL {
            let src = s.source(storage);
            let module = naga::front::wgsl::parse_str(&src)
                .unwrap_or_else(|e| panic!("{} {storage:?}: {}", s.name(), e.emit_to_string(&src)));
            let mut v = naga::valid::Validator::new(
                naga::valid::ValidationFlags::all(),
                naga::valid::Capabilities::all(),
            );
            v.validate(&module)
                .unwrap_or_else(|e| panic!("{} {storage:?}: {e:?}", s.name()));
        }
    }
}
