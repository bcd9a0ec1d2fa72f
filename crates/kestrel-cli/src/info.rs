//! `kestrel info`.

use crate::inputs::input_shapes;
use anyhow::Result;
use kestrel::Model;
use std::path::Path;

pub fn info(path: &Path, json: bool, shapes: &[String]) -> Result<()> {
    let model = Model::load(path)?;
    let shapes = input_shapes(&model, shapes)?;
    let s = model.summary(&shapes)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(());
    }
    println!("model     {} ({}, opset {})", s.name, s.producer, s.opset);
    for (n, dt, dims) in &s.inputs {
        println!("input     {n}: {dt} [{}]", dims.join(", "));
    }
    for (n, dt, shape) in &s.outputs {
        println!("output    {n}: {dt} {shape:?}");
    }
    println!(
        "shapes    figures below for input shapes {:?}",
        s.input_shapes
    );
    println!(
        "params    {} ({:.2} MB)",
        s.parameters,
        s.parameter_bytes as f64 / 1e6
    );
    println!("MACs      {:.3} G", s.macs as f64 / 1e9);
    let ops: Vec<String> = s.ops.iter().map(|(o, n)| format!("{o} x{n}")).collect();
    println!("ops       {}", ops.join(", "));
    let ops: Vec<String> = s
        .prepared_ops
        .iter()
        .map(|(o, n)| format!("{o} x{n}"))
        .collect();
    println!("prepared  {}", ops.join(", "));
    Ok(())
}
