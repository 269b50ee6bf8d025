//! Trains the self-supervised classifier on a folder of normal images with the paper's 3-way
//! augmentation (normal / CutPaste / Scar, [`cutpaste::augment::Augmentation::three_way`] fed by
//! [`cutpaste::pipeline::AugmentSource`]), checkpointing as it goes; Ctrl-C and run again with
//! `--resume` to continue where it stopped.
//!
//! ```text
//! cargo run --example train -- --data ../shared/data/mvtec/bottle/train/good --size 64 \
//!     --steps 50 --batch-images 8 --checkpoint out/train.safetensors --resume
//! ```
//!
//! Progress goes to stderr every 10 steps; the last line on stdout is one JSON summary (the
//! shape; the numbers depend on the data and the machine):
//!
//! ```text
//! step 10/50 loss L acc A lr R N img/s eta Ts
//! …
//! {"data":"bottle","size":64,"steps":50,"start_step":0,"final_loss":L,"final_accuracy":A,"images_per_sec":N,"precision":"Fp32","channels_last":true,"device":"Cpu","checkpoint":"out/train.safetensors"}
//! ```
//!
//! Options: `--data DIR` (synthetic images when absent), `--size PX` (64), `--steps N` (50),
//! `--batch-images N` (8 source images × 3 views per step), `--precision fp32|bf16|auto`
//! (auto), `--checkpoint PATH` (`out/train.safetensors`), `--every N` (10), `--resume`,
//! `--seed N` (0).
#[path = "../src/bin/cutpaste/malloc_conf.rs"]
mod malloc_conf;

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use cutpaste::augment::Augmentation;
use cutpaste::data::synthetic::{SyntheticKind, SyntheticSpec};
use cutpaste::model::{
    train, Classifier, ClassifierConfig, Control, FastPath, Precision, TrainParams,
};
use cutpaste::pipeline::AugmentSource;
use std::sync::Arc;

struct Args {
    data: String,
    size: u32,
    steps: usize,
    batch_images: usize,
    precision: String,
    checkpoint: String,
    every: usize,
    resume: bool,
    seed: u64,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        data: "../shared/data/mvtec/bottle/train/good".into(),
        size: 64,
        steps: 50,
        batch_images: 8,
        precision: "auto".into(),
        checkpoint: "out/train.safetensors".into(),
        every: 10,
        resume: false,
        seed: 0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--resume" {
            a.resume = true;
            continue;
        }
        let v = it.next().ok_or(format!("{flag} needs a value"))?;
        let num = |v: &str| v.parse::<u64>().map_err(|e| format!("{flag} {v}: {e}"));
        match flag.as_str() {
            "--data" => a.data = v,
            "--size" => a.size = num(&v)? as u32,
            "--steps" => a.steps = num(&v)? as usize,
            "--batch-images" => a.batch_images = num(&v)? as usize,
            "--precision" => a.precision = v,
            "--checkpoint" => a.checkpoint = v,
            "--every" => a.every = num(&v)? as usize,
            "--seed" => a.seed = num(&v)?,
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    Ok(a)
}

/// The folder's images resized to `size`, or synthetic ones when it has none.
fn load(dir: &str, size: u32) -> (Vec<image::RgbImage>, &'static str) {
    let imgs = cutpaste::data::FolderDataset::new(dir)
        .open()
        .and_then(|ds| ds.load_train(size))
        .unwrap_or_default();
    if imgs.is_empty() {
        eprintln!("no images in {dir}: training on synthetic images");
        let spec = SyntheticSpec::new(SyntheticKind::Part).side(size);
        ((0..32).map(|i| spec.train_image(i)).collect(), "synthetic")
    } else {
        (imgs, "bottle")
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a = parse()?;
    let device = tch::Device::cuda_if_available();
    let mut fast = FastPath::auto(device);
    match a.precision.as_str() {
        "fp32" => fast.precision = Precision::Fp32,
        "bf16" => fast.precision = Precision::Bf16,
        _ => {}
    }
    let (images, data) = load(&a.data, a.size);
    let augmentation = Augmentation::three_way();
    let mut config = ClassifierConfig::new(augmentation.num_classes() as i64, device);
    let mut source = AugmentSource::new(Arc::new(images), augmentation, a.batch_images, a.seed)?;
    config.fast_path = fast;
    let mut clf = Classifier::new(&config, device, a.seed)?;
    if let Some(dir) = std::path::Path::new(&a.checkpoint).parent() {
        std::fs::create_dir_all(dir)?;
    }
    let params = TrainParams::paper().steps(a.steps).seed(a.seed).checkpoint(
        &a.checkpoint,
        a.every,
        a.resume,
    );
    let mut last = None;
    let report = train(&mut clf, &mut source, &params, |p| {
        if p.step % 10 == 0 || p.step == p.steps {
            eprintln!(
                "step {}/{} loss {:.4} acc {:.3} lr {:.5} {:.1} img/s eta {:.0?}",
                p.step, p.steps, p.loss, p.accuracy, p.learning_rate, p.images_per_sec, p.eta
            );
        }
        last = Some(p.clone());
        Control::Continue
    })?;
    let summary = serde_json::json!({
        "data": data, "size": a.size, "steps": a.steps, "start_step": report.start_step,
        "final_loss": last.as_ref().map(|p| p.loss),
        "final_accuracy": last.as_ref().map(|p| p.accuracy),
        "images_per_sec": last.as_ref().map(|p| p.images_per_sec),
        "precision": format!("{:?}", fast.precision), "channels_last": fast.channels_last,
        "device": format!("{device:?}"), "checkpoint": a.checkpoint,
    });
    println!("{summary}");
    Ok(())
}
