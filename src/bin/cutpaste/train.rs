//! `cutpaste train`: self-supervised training + density fit, then a threshold, then one file.
use crate::options::{check_new_file, open_mvtec, parse_device, DensityKind, Variant};
use crate::progress::FitBars;
use crate::Outcome;
use cutpaste::prelude::*;
use std::path::PathBuf;

/// Train a detector on defect-free images.
#[derive(clap::Args)]
pub(crate) struct TrainArgs {
    /// Defect-free training images: an MVTec-layout category folder (its `train/good` is used)
    /// or any folder of images.
    data: PathBuf,
    /// Where to write the trained detector (.safetensors). An existing file is kept unless --force.
    #[arg(short, long)]
    out: PathBuf,
    /// Training steps. The paper uses 65536 (GPU); on a CPU start with 200–500 and --size 128.
    #[arg(long, default_value_t = 65536)]
    steps: usize,
    /// Square side images are resized to (paper: 256).
    #[arg(long, default_value_t = 256)]
    size: u32,
    /// Source images per step; each yields one view per class (paper: 32).
    #[arg(long, default_value_t = 32)]
    batch_images: usize,
    /// Augmentation / classification task.
    #[arg(long, value_enum, default_value_t = Variant::ThreeWay)]
    variant: Variant,
    /// Density fitted on the embeddings of the training images.
    #[arg(long, value_enum, default_value_t = DensityKind::Gaussian)]
    density: DensityKind,
    /// Seed of everything random; the same seed gives the same detector on the same device.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// auto (CUDA when available), cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto", value_parser = parse_device)]
    device: Device,
    /// Initialise the backbone from a safetensors file with torchvision ResNet-18 names.
    #[arg(long)]
    pretrained: Option<PathBuf>,
    /// Decision threshold: `synthetic` (F1-max between the held-out images and their CutPaste/Scar
    /// views, never below the 0.99-quantile of the held-out scores, and that quantile alone when
    /// the views separate poorly (AUROC < 0.9); needs no defect samples), `quantile:Q` (the
    /// Q-quantile of the held-out scores, e.g. quantile:0.99) or `none`.
    #[arg(long, default_value = "synthetic")]
    threshold: String,
    /// Fraction of the training images held out from training and the density fit and used only
    /// to set the threshold (in-sample scores are too low to set it on). 0 uses all images for
    /// both.
    #[arg(long, default_value_t = 0.1)]
    holdout: f64,
    /// Also train the patch-level localizer (paper §4.2: crops, dense patch features,
    /// per-location Gaussians) for `eval --heatmaps` and `Detector::localize`.
    #[arg(long)]
    localize: bool,
    /// Training steps of the patch model (default: --steps).
    #[arg(long)]
    localizer_steps: Option<usize>,
    /// Dense patch features: `exact` (every 32² patch at stride 4 through the network, slow on
    /// CPU), `sub4` (exact on a 4× coarser grid, interpolated; the default) or `fast`
    /// (whole-image passes; fastest, least accurate).
    #[arg(long, default_value = "sub4")]
    localizer_mode: String,
    /// Save resumable training state every N steps next to --out (`<out>.train`); a rerun with
    /// the same options continues from it.
    #[arg(long)]
    checkpoint_every: Option<usize>,
    /// Replace --out if it exists.
    #[arg(long)]
    force: bool,
}

enum Threshold {
    Synthetic,
    Quantile(f64),
    None,
}

fn parse_threshold(s: &str) -> Result<Threshold, String> {
    match s {
        "synthetic" => Ok(Threshold::Synthetic),
        "none" => Ok(Threshold::None),
        _ => s
            .strip_prefix("quantile:")
            .and_then(|q| q.parse().ok())
            .map(Threshold::Quantile)
            .ok_or_else(|| format!("--threshold {s}: use synthetic, quantile:Q or none")),
    }
}

fn training_data(dir: &std::path::Path) -> cutpaste::Result<Dataset> {
    if dir.join("train").join("good").is_dir() {
        open_mvtec(dir, true)
    } else {
        FolderDataset::new(dir).open()
    }
}

/// Moves every k-th training image (evenly spaced, `fraction` of them) out of `data`.
fn split_holdout(
    mut data: Dataset,
    fraction: f64,
) -> Result<(Dataset, Vec<cutpaste::data::Sample>), String> {
    if !(0.0..0.5).contains(&fraction) {
        return Err(format!("--holdout {fraction}: use a fraction in [0, 0.5)"));
    }
    let n = data.train.len();
    let k = (fraction * n as f64).round() as usize;
    if k == 0 {
        return Ok((data, Vec::new()));
    }
    let picked: Vec<usize> = (0..k).map(|i| (2 * i + 1) * n / (2 * k)).collect();
    let (mut keep, mut held) = (Vec::new(), Vec::new());
    for (i, s) in data.train.drain(..).enumerate() {
        if picked.contains(&i) {
            held.push(s);
        } else {
            keep.push(s);
        }
    }
    data.train = keep;
    Ok((data, held))
}

pub(crate) fn run(a: TrainArgs) -> Result<Outcome, Box<dyn std::error::Error>> {
    check_new_file(&a.out, a.force)?;
    let threshold = parse_threshold(&a.threshold)?;
    let (data, held_out) = split_holdout(training_data(&a.data)?, a.holdout)?;
    let mut training = TrainParams::paper().steps(a.steps);
    if let Some(every) = a.checkpoint_every {
        let mut state = a.out.clone().into_os_string();
        state.push(".train");
        training = training.checkpoint(PathBuf::from(state), every, true);
    }
    let mut backbone = Backbone::resnet18();
    if let Some(p) = &a.pretrained {
        backbone = backbone.pretrained(p);
    }
    let params = Detector::params()
        .augmentation(a.variant.augmentation())
        .density(a.density.density())
        .image_size(a.size)
        .batch_images(a.batch_images)
        .training(training)
        .backbone(backbone)
        .device(a.device)
        .seed(a.seed);
    let params = if a.localize {
        let mode = match a.localizer_mode.as_str() {
            "exact" => FeatureMode::Exact,
            "sub4" => FeatureMode::Subsampled { factor: 4 },
            "fast" => FeatureMode::fast(),
            m => return Err(format!("--localizer-mode {m}: use exact, sub4 or fast").into()),
        };
        let steps = a.localizer_steps.unwrap_or(a.steps);
        params.localizer(LocalizerParams::paper().mode(mode).steps(steps))
    } else {
        params
    };
    params.check()?;
    eprintln!(
        "training on {} images from {} ({} held out for the threshold; {} steps, {}², {:?}, device {:?})",
        data.train.len(),
        a.data.display(),
        held_out.len(),
        a.steps,
        a.size,
        a.variant,
        a.device
    );
    let mut bars = FitBars::new();
    let mut detector = params.fit_with(&data, |e| {
        bars.update(e);
        Control::Continue
    })?;
    let normal = if held_out.is_empty() {
        data.load_train(a.size)?
    } else {
        cutpaste::data::load_all(&held_out, a.size)?
    };
    let t = match threshold {
        Threshold::Synthetic => Some(detector.threshold_from_synthetic(&normal, a.seed)?),
        Threshold::Quantile(q) => Some(detector.threshold_from_quantile(&normal, q)?),
        Threshold::None => None,
    };
    if let Some(note) = detector.calibration().and_then(|c| c.note.as_deref()) {
        eprintln!("threshold: {note}");
    }
    detector.save(&a.out)?;
    eprintln!(
        "trained in {:.1} s; threshold {}; wrote {}",
        detector.fit_time().as_secs_f64(),
        t.map_or("none".to_string(), |t| format!("{t:.4}")),
        a.out.display()
    );
    Ok(Outcome::Ok)
}
