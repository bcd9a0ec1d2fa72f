//! `kestrel convert`: writes an fp16 ONNX model for other engines.

use anyhow::Result;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct ConvertArgs {
    model: PathBuf,
    /// Output ONNX file.
    #[arg(short, long)]
    output: PathBuf,
    /// Target precision of the written model (inputs and outputs stay float; Casts are added).
    #[arg(long, value_enum, default_value = "f16")]
    to: Target,
    /// Store only the large weights in f16 (each read through a Cast to float); the
    /// computation stays float. Kestrel then keeps those weights in f16 on the CPU.
    #[arg(long)]
    weights_only: bool,
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum Target {
    F16,
}

pub fn run(a: ConvertArgs) -> Result<()> {
    let Target::F16 = a.to;
    let (bytes, rep) = if a.weights_only {
        kestrel::export_f16::export_f16_weights_only(&a.model)?
    } else {
        kestrel::export_f16::export_f16(&a.model)?
    };
    std::fs::write(&a.output, &bytes)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&rep)?);
    } else {
        println!(
            "{} -> {}: {} tensors to fp16 ({} kept f32 as ONNX requires), {:.1} MB -> {:.1} MB; {} values clamped to ±65504, {} flushed to zero",
            a.model.display(),
            a.output.display(),
            rep.tensors_converted,
            rep.tensors_kept_f32,
            rep.bytes_before as f64 / 1e6,
            rep.bytes_after as f64 / 1e6,
            rep.clamped,
            rep.flushed_to_zero
        );
    }
    Ok(())
}
