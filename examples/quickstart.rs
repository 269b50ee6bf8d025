//! The README's main job on the embedded synthetic dataset.
//!
//! ```text
//! cargo run --example quickstart                     # or: make demo
//! ```
//! For now it generates the synthetic categories and loads them back through the MVTec reader:
//! ```text
//! synthetic_part: 64 train, 20 good + 20 defect test images (contamination 5, missing 5, scratch 5, stain 5), masks: yes -> out/synthetic/synthetic_part
//! synthetic_weave: 64 train, 20 good + 20 defect test images (contamination 5, hole 5, scratch 5, stain 5), masks: yes -> out/synthetic/synthetic_weave
//! ```
use cutpaste::data::synthetic::{SyntheticKind, SyntheticSpec};
use cutpaste::data::{Dataset, DEFAULT_SIDE};

fn main() -> cutpaste::Result<()> {
    let root = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "out/synthetic".into());
    for kind in [SyntheticKind::Part, SyntheticKind::Weave] {
        let dir = SyntheticSpec::new(kind).seed(0).write(&root)?;
        let ds = Dataset::mvtec(&dir)?;
        let train = ds.load_train(DEFAULT_SIDE)?;
        let test = ds.load_test(DEFAULT_SIDE)?;
        let n_bad = ds.test.iter().filter(|s| s.is_anomalous()).count();
        let per_type: Vec<String> = ds
            .defect_types()
            .iter()
            .map(|t| {
                format!(
                    "{t} {}",
                    ds.test.iter().filter(|s| &s.defect_type == t).count()
                )
            })
            .collect();
        println!(
            "{}: {} train, {} good + {} defect test images ({}), masks: {} -> {}",
            ds.name,
            train.len(),
            test.len() - n_bad,
            n_bad,
            per_type.join(", "),
            if ds.has_masks() { "yes" } else { "no" },
            dir.display()
        );
    }
    Ok(())
}
