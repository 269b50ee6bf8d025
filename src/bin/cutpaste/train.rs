//! `cutpaste train`: self-supervised training + density fit, then a threshold, then one file.
use crate::options::{check_new_file, open_mvtec, parse_device, DensityKind, Variant};
use crate::progress::FitBars;
use crate::Outcome;
use cutpaste::prelude::*;
use std::path::PathBuf;
use std::time::Duration;

/// Train a detector on defect-free images.
#[derive(clap::Args)]
pub(crate) struct TrainArgs {
    /// Defect-free training images: an MVTec-layout category folder (its `train/good` is used)
    /// or any folder of images.
    data: PathBuf,
    /// Where to write the trained detector (.safetensors). An existing file is kept unless --force.
    #[arg(short, long)]
    out: PathBuf,
    /// Training steps, exactly (the paper: 65536). Without --steps the run is planned to fit
    /// --budget on a CPU, and uses the paper's 65536 steps on CUDA.
    #[arg(long)]
    steps: Option<usize>,
    /// Wall-clock budget for the whole fit (training, features, density), e.g. 90s, 10m, 1h:
    /// the step time is measured and the steps planned to fit it. Default on a CPU: 10m.
    #[arg(long, value_parser = parse_duration)]
    budget: Option<Duration>,
    /// `dense` (default): the patch model trained on 64² crops of the images at --resolution,
    /// scored by dense mid-level features and tied (one size) or shared Gaussians; the image
    /// score is the mean of the top 1 % of the anomaly map, and every detector can localize. `paper`: the paper's
    /// image-level protocol (whole images at --size, pooled features; --localize adds the
    /// patch localizer).
    #[arg(long, value_enum, default_value_t = Recipe::Dense)]
    recipe: Recipe,
    /// Image score of the dense recipe: `combined` (default: the map's top-1 % mean plus the
    /// pooled Gaussian of the whole image at --size, each standardised by its mean and standard
    /// deviation over the training images, the pooled one weighted by min(1, images / 512))
    /// or `map` (the map's top-1 % mean alone).
    #[arg(long, value_enum)]
    image_score: Option<DenseScore>,
    /// Square side images are resized to for the image model (paper: 256; with the dense
    /// recipe only the pooled features for embeddings and GradCAM use it: default 64).
    #[arg(long)]
    size: Option<u32>,
    /// Working resolution of the localizer: the short side images are resized to (never
    /// enlarged, aspect kept) with the dense recipe, the square side with the patch modes.
    #[arg(long, default_value_t = 256)]
    resolution: u32,
    /// Density of the localizer's patch features: `auto` (tied when all training images have
    /// one size, else shared), `tied` (a mean per grid cell, one covariance, 128 PCA
    /// dimensions; images of one size), `tied-normalized` (tied, each cell's score divided by
    /// its mean over the training images: for small defects next to busy regions), `shared`
    /// (one Gaussian for all positions; any sizes) or `per-location` (a Gaussian per cell on 64
    /// PCA dimensions; needs hundreds of images).
    #[arg(long, default_value = "auto")]
    localizer_gaussian: String,
    /// Covariance of the localizer's patch Gaussians: `diagonal` (default with the dense
    /// recipe: each PCA dimension scaled by its variance) or `full` (the Mahalanobis distance;
    /// default with --recipe paper).
    #[arg(long, value_enum)]
    localizer_covariance: Option<CovarianceArg>,
    /// Source images (crops, with the dense recipe) per step of either model; each yields one
    /// view per class (paper: 32).
    #[arg(long, default_value_t = 32)]
    batch_images: usize,
    /// Initial learning rate of the SGD cosine schedule (paper: 0.03).
    #[arg(long, default_value_t = 0.03)]
    learning_rate: f64,
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
    /// With --recipe paper: also train the patch-level localizer (paper §4.2) for
    /// `eval --heatmaps` and `Detector::localize` (the dense recipe always has one).
    #[arg(long)]
    localize: bool,
    /// Training steps of the patch model (default: --steps).
    #[arg(long)]
    localizer_steps: Option<usize>,
    /// Patch features: `dense` (one pass per image, layer2+layer3 cells every 8 px; the dense
    /// recipe's default), `exact` (every 32² patch at stride 4 through the network, slow on
    /// CPU), `sub4` (exact on a 4× coarser grid, interpolated; the paper recipe's default) or
    /// `fast` (whole-image passes).
    #[arg(long)]
    localizer_mode: Option<String>,
    /// Save resumable training state every N steps next to --out (`<out>.train`); a rerun with
    /// the same options continues from it.
    #[arg(long)]
    checkpoint_every: Option<usize>,
    /// Replace --out if it exists.
    #[arg(long)]
    force: bool,
}

/// The localizer's covariance (see `--localizer-covariance`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum CovarianceArg {
    /// Each PCA dimension's variance alone.
    Diagonal,
    /// The full covariance.
    Full,
}

/// How the detector is built (see `--recipe`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Recipe {
    /// Patch model on crops at full resolution, dense features, image score = mean of the map's top 1 %.
    Dense,
    /// The paper's image-level protocol.
    Paper,
}

/// The dense recipe's image score (see `--image-score`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum DenseScore {
    /// Map and pooled scores, standardised and summed.
    Combined,
    /// The map's top-1 % mean.
    Map,
}

/// Parses `90s`, `10m`, `1h`, `1h30m` or plain seconds (`600`).
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("--budget {s}: use e.g. 90s, 10m, 1h or 1h30m");
    let mut total = 0.0;
    let mut num = String::new();
    for c in s.trim().chars() {
        match c {
            '0'..='9' | '.' => num.push(c),
            'h' | 'm' | 's' => {
                let v: f64 = num.parse().map_err(|_| bad())?;
                total += v * match c {
                    'h' => 3600.0,
                    'm' => 60.0,
                    _ => 1.0,
                };
                num.clear();
            }
            _ => return Err(bad()),
        }
    }
    if !num.is_empty() {
        total += num.parse::<f64>().map_err(|_| bad())?;
    }
    if !(total.is_finite() && total >= 1.0) {
        return Err(format!("--budget {s}: must be at least 1 s"));
    }
    Duration::try_from_secs_f64(total).map_err(|_| format!("--budget {s}: too long"))
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

/// The localizer's feature mode from `--localizer-mode`.
fn feature_mode(name: &str) -> Result<FeatureMode, String> {
    match name {
        "dense" => Ok(FeatureMode::Dense),
        "exact" => Ok(FeatureMode::Exact),
        "sub4" => Ok(FeatureMode::Subsampled { factor: 4 }),
        "fast" => Ok(FeatureMode::fast()),
        m => Err(format!(
            "--localizer-mode {m}: use dense, exact, sub4 or fast"
        )),
    }
}

/// Steps and budget: exact steps when asked, else a budget (default 10 minutes) on a CPU and
/// the paper's 65,536 steps on CUDA.
fn schedule(a: &TrainArgs) -> (usize, Option<Duration>) {
    match (a.steps, a.budget) {
        (Some(steps), _) => (steps, None),
        (None, Some(b)) => (65_536, Some(b)),
        (None, None) if a.device == Device::Cpu => (65_536, Some(DEFAULT_BUDGET)),
        (None, None) => (65_536, None),
    }
}

/// The CLI's budget when neither --steps nor --budget is given on a CPU.
const DEFAULT_BUDGET: Duration = Duration::from_secs(600);

/// The detector parameters the options describe.
fn detector_params(a: &TrainArgs) -> Result<DetectorParams, Box<dyn std::error::Error>> {
    let (steps, budget) = schedule(a);
    let mut training = TrainParams::paper()
        .steps(steps)
        .learning_rate(a.learning_rate);
    if let Some(b) = budget {
        training = training.budget(b);
    }
    if let Some(every) = a.checkpoint_every {
        let mut state = a.out.clone().into_os_string();
        state.push(".train");
        training = training.checkpoint(PathBuf::from(state), every, true);
    }
    let mut backbone = Backbone::resnet18();
    if let Some(p) = &a.pretrained {
        backbone = backbone.pretrained(p);
    }
    let dense = a.recipe == Recipe::Dense;
    let size = a.size.unwrap_or(if dense { 64 } else { 256 });
    let params = Detector::params()
        .augmentation(a.variant.augmentation())
        .density(a.density.density())
        .image_size(size)
        .batch_images(a.batch_images)
        .training(training)
        .backbone(backbone)
        .device(a.device)
        .seed(a.seed);
    if !dense && !a.localize {
        return Ok(params);
    }
    let default_mode = if dense { "dense" } else { "sub4" };
    let mode = feature_mode(a.localizer_mode.as_deref().unwrap_or(default_mode))?;
    let density = match a.localizer_gaussian.as_str() {
        "auto" => PatchDensity::Auto,
        "shared" => PatchDensity::Shared,
        "per-location" => PatchDensity::PerLocation,
        "tied" => PatchDensity::Tied,
        "tied-normalized" => PatchDensity::TiedNormalized,
        g => {
            return Err(format!(
                "--localizer-gaussian {g}: use auto, tied, tied-normalized, shared or per-location"
            )
            .into())
        }
    };
    let base = if mode == FeatureMode::Dense {
        LocalizerParams::dense()
    } else {
        LocalizerParams::paper()
    };
    let base = if density == PatchDensity::PerLocation && mode == FeatureMode::Dense {
        base.pca_dim(64) // a 384² covariance per cell would take ~0.6 GB at 256²
    } else {
        base
    };
    let base = match a.localizer_covariance {
        Some(CovarianceArg::Diagonal) => base.covariance(PatchCovariance::Diagonal),
        Some(CovarianceArg::Full) => base.covariance(PatchCovariance::Full),
        None => base,
    };
    let lp = base
        .mode(mode)
        .density(density)
        .resolution(a.resolution)
        .batch_images(a.batch_images)
        .steps(a.localizer_steps.unwrap_or(steps));
    let params = params.localizer(lp);
    Ok(match (dense, a.image_score) {
        (true, None | Some(DenseScore::Combined)) => params.image_score(ImageScore::Combined),
        (true, Some(DenseScore::Map)) => params.image_score(ImageScore::Map),
        (false, None) => params,
        (false, Some(_)) => {
            return Err(
                "--image-score applies to the dense recipe; --recipe paper scores \
                        images by the pooled features"
                    .into(),
            )
        }
    })
}

pub(crate) fn run(a: TrainArgs) -> Result<Outcome, Box<dyn std::error::Error>> {
    check_new_file(&a.out, a.force)?;
    let threshold = parse_threshold(&a.threshold)?;
    let (data, held_out) = split_holdout(training_data(&a.data)?, a.holdout)?;
    let params = detector_params(&a)?.check()?;
    let (steps, budget) = schedule(&a);
    let plan = match budget {
        Some(b) => format!("budget {:.0} s", b.as_secs_f64()),
        None => format!("{steps} steps"),
    };
    eprintln!(
        "training on {} images from {} ({} held out for the threshold; {:?} recipe, {plan}, {:?}, device {:?})",
        data.train.len(),
        a.data.display(),
        held_out.len(),
        a.recipe,
        a.variant,
        a.device
    );
    let mut bars = FitBars::new();
    let mut detector = params.fit_with(&data, |e| {
        bars.update(e);
        Control::Continue
    })?;
    for r in detector.training_record() {
        let plan = match (r.budget_seconds, r.replans.len()) {
            (None, _) => String::new(),
            (Some(_), 0) => format!(" (planned at {:.3} s/step)", r.step_seconds),
            (Some(_), n) => format!(
                " (planned {} at {:.3} s/step, re-planned {n} times to end on time)",
                r.planned_steps, r.step_seconds
            ),
        };
        eprintln!(
            "{}: {} steps in {:.1} s{plan}",
            r.stage,
            r.steps_done(),
            r.train_seconds,
        );
    }
    let normal = if held_out.is_empty() {
        cutpaste::data::load_all_native(&data.train)?
    } else {
        cutpaste::data::load_all_native(&held_out)?
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
