//! Run a model on raw tensors by input name and print the outputs' shapes.
//!
//! `cargo run --release -p kestrel --example raw_tensors -- MODEL`

use kestrel::{Model, Session, SessionOptions, Tensor};

fn main() -> Result<(), kestrel::Error> {
    let path = std::env::args()
        .nth(1)
        .map(Into::into)
        .unwrap_or_else(kestrel::default_model_path);
    let model = Model::load(&path)?;
    let shapes = model.default_input_shapes(224);
    let inputs = model
        .inputs()
        .into_iter()
        .zip(shapes)
        .map(|((name, dtype, _), shape)| Ok((name, Tensor::zeros(dtype, shape)?)))
        .collect::<Result<Vec<_>, kestrel::Error>>()?;
    let mut session = Session::new(&model, SessionOptions::default())?;
    for (name, t) in session.run_named(inputs)? {
        println!("{name}: {} {:?}", t.dtype(), t.shape());
    }
    for step in session.steps() {
        println!(
            "{:40} {:18} {:18} {:?}",
            step.node_name, step.op, step.kernel, step.output_shapes
        );
    }
    Ok(())
}
