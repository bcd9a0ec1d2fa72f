//! Building input tensors: parsing shapes, random inputs, npz files.

use anyhow::{bail, Context, Result};
use kestrel::{DType, Model, Tensor};
use rand::{Rng, SeedableRng};

/// Parses `1x3x224x224`.
pub fn parse_shape(s: &str) -> Result<Vec<usize>> {
    s.split(['x', 'X', ','])
        .map(|d| {
            d.trim()
                .parse::<usize>()
                .with_context(|| format!("bad dimension '{d}' in shape '{s}'"))
        })
        .collect()
}

/// Input shapes: from `--shape` flags when given (one per input), else the model's declared
/// shapes with free dims set to 224.
pub fn input_shapes(model: &Model, shapes: &[String]) -> Result<Vec<Vec<usize>>> {
    if shapes.is_empty() {
        return Ok(model.default_input_shapes(224));
    }
    let n = model.inputs().len();
    if shapes.len() != n {
        bail!(
            "the model has {n} inputs, {} --shape flags were given",
            shapes.len()
        );
    }
    shapes.iter().map(|s| parse_shape(s)).collect()
}

/// Deterministic random inputs: uniform in [-1, 1) for floats, zeros for integers.
pub fn random_inputs(model: &Model, shapes: &[Vec<usize>], seed: u64) -> Result<Vec<Tensor>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    model
        .inputs()
        .iter()
        .zip(shapes)
        .map(|((_, dt, _), s)| {
            let n: usize = s.iter().product();
            Ok(match dt {
                DType::F32 => Tensor::from_vec(
                    s.clone(),
                    (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect(),
                )?,
                other => Tensor::zeros(*other, s.clone())?,
            })
        })
        .collect()
}

/// Inputs from an npz file keyed by input name (a single-input model also accepts one array of
/// any name).
pub fn npz_inputs(model: &Model, path: &std::path::Path) -> Result<Vec<Tensor>> {
    let mut arrays = kestrel::npz::read_npz(path)?;
    let names: Vec<String> = model.inputs().into_iter().map(|i| i.0).collect();
    if names.len() == 1 && arrays.len() == 1 {
        return Ok(vec![arrays.remove(0).1]);
    }
    names
        .iter()
        .map(|n| {
            let pos = arrays.iter().position(|(k, _)| k == n).with_context(|| {
                format!("{} has no array named '{n}' (model input)", path.display())
            })?;
            Ok(arrays.swap_remove(pos).1)
        })
        .collect()
}
