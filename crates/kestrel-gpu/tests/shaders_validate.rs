//! Every WGSL shader in every storage variant parses and validates with naga (no GPU needed).

use kestrel_gpu::{BigTile, Shader, Storage};

#[test]
fn every_shader_variant_validates() {
    for storage in Storage::ALL {
        // the cooperative-matrix GEMM exists for native f16 storage only
        let coop =
            matches!(storage, Storage::F16 | Storage::F16Arith).then_some(Shader::Conv1x1Coop);
        let sources = Shader::ALL
            .into_iter()
            .chain(coop)
            .map(|s| (s, s.source(storage)))
            .chain(BigTile::VARIANTS.map(|t| {
                let s = Shader::Conv1x1Big(t);
                (s, s.source(storage))
            }));
        for (s, src) in sources {
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
