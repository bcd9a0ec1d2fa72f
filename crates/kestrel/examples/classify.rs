//! Classify images with any ImageNet classifier.
//!
//! `cargo run --release -p kestrel --example classify -- [MODEL] [IMAGE|DIR]`
//! (defaults: the built-in EfficientNet-Lite0 and the bundled photos).

use kestrel::{classify, preprocess, Model, Preset, Session, SessionOptions};

fn main() -> Result<(), kestrel::Error> {
    let mut args = std::env::args().skip(1);
    let model_path = args
        .next()
        .map(Into::into)
        .unwrap_or_else(kestrel::default_model_path);
    let input = args
        .next()
        .map(Into::into)
        .unwrap_or_else(kestrel::default_photos_path);

    let model = Model::load(&model_path)?; // import once, share between sessions
    let preset = Preset::for_model(&model); // resize/crop/normalise for this model
    let mut session = Session::new(&model, SessionOptions::default())?; // prepared at first run

    for file in preprocess::image_files(&input)? {
        let outputs = session.run(vec![preset.load_image(&file)?])?;
        let top = classify::top_k(&outputs[0], 3, classify::imagenet_labels())?;
        println!(
            "{}: {}",
            file.display(),
            top.iter()
                .map(|(l, p)| format!("{l} {p:.2}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}
