//! Ablation of the localizer's density on one trained patch model: refits the patch Gaussians
//! with each variant (shared or per-location, PCA dimensions, σ) and prints one Markdown row per
//! variant with image AUROC (map maximum, and mean of the top 1 % of map pixels), pixel AUROC
//! and AUPRO. The patch model is trained once (by `cutpaste train`), so rows differ only in the
//! density.
//!
//! ```text
//! cutpaste train ../shared/data/bsdata/ball_screw -o out/bs.safetensors --steps 300
//! cargo run --release --example ablate_localizer -- out/bs.safetensors ../shared/data/bsdata/ball_screw \
//!     shared:384:4 per-location:64:4 per-location:128:4 shared:384:8
//! ```
//! prints
//! ```text
//! | variant | image AUROC (max) | image AUROC (top 1 %) | pixel AUROC | AUPRO | fit s | ms/image |
//! |---|---|---|---|---|---|---|
//! | shared:384:4 | 82.5 | … | 93.0 | 52.6 | … | … |
//! ```
//! Variants are `density:pca_dim:sigma` (density `shared`, `per-location`, `tied` or
//! `tied-normalized`).
//!
//! With `HOLDOUT=0.2` each variant is also refitted on the other 80 % of the training images
//! (every fifth image held out) and the last column gives the AUROC of the held-out normals
//! against their CutPaste/Scar views (the synthetic validation of the threshold calibration):
//! a selection criterion that needs no defect samples.
use cutpaste::localize::PatchDensity;
use cutpaste::metrics::roc_auc;
use cutpaste::prelude::*;
use std::time::Instant;

#[path = "../src/bin/cutpaste/malloc_conf.rs"]
mod malloc_conf;

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn parse_variant(v: &str) -> Result<(PatchDensity, usize, f64)> {
    let parts: Vec<&str> = v.split(':').collect();
    let bad = || Error::invalid_param("variant", format!("{v}: use density:pca_dim:sigma"));
    if parts.len() != 3 {
        return Err(bad());
    }
    let density = match parts[0] {
        "shared" => PatchDensity::Shared,
        "per-location" => PatchDensity::PerLocation,
        "tied" => PatchDensity::Tied,
        "tied-normalized" => PatchDensity::TiedNormalized,
        _ => return Err(bad()),
    };
    Ok((
        density,
        parts[1].parse().map_err(|_| bad())?,
        parts[2].parse().map_err(|_| bad())?,
    ))
}

/// Mean of the largest 1 % of the map's pixels.
fn top_mean(map: &ndarray::Array2<f32>) -> f32 {
    let mut v: Vec<f32> = map.iter().copied().collect();
    v.sort_by(|a, b| b.total_cmp(a));
    let k = (v.len() / 100).max(1);
    v[..k].iter().sum::<f32>() / k as f32
}

/// Refits on the training images outside every `1/h`-th one and returns the AUROC of the held-out
/// normals against their synthetic (CutPaste/Scar) views.
fn synthetic_auroc(
    det: &mut Detector,
    lp: &LocalizerParams,
    data: &Dataset,
    h: f64,
) -> Result<f64> {
    let every = (1.0 / h).round().max(2.0) as usize;
    let (held, fit): (Vec<_>, Vec<_>) = data
        .train
        .iter()
        .cloned()
        .enumerate()
        .partition(|(i, _)| i % every == every - 1);
    let strip =
        |v: Vec<(usize, cutpaste::data::Sample)>| v.into_iter().map(|(_, s)| s).collect::<Vec<_>>();
    let subset = Dataset {
        train: strip(fit),
        ..data.clone()
    };
    det.refit_localizer(lp.clone(), &subset)?;
    let held = cutpaste::data::load_all_native(&strip(held))?;
    let c = det.calibrate_synthetic(&held, 0, cutpaste::detector::CalibrationRule::default())?;
    Ok(c.synthetic_auroc.unwrap_or(f64::NAN))
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        eprintln!("usage: ablate_localizer CHECKPOINT DATA VARIANT...");
        std::process::exit(2);
    }
    let mut det = Detector::load(&args[0], Device::Cpu)?;
    let data = Dataset::mvtec_with(
        &args[1],
        MvtecOptions {
            allow_missing_masks: true,
        },
    )?;
    let labels: Vec<bool> = data.test.iter().map(|s| s.is_anomalous()).collect();
    let holdout: f64 = std::env::var("HOLDOUT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    println!("| variant | image AUROC (max) | image AUROC (top 1 %) | pixel AUROC | AUPRO | fit s | ms/image | synthetic AUROC (held out) |");
    println!("|---|---|---|---|---|---|---|---|");
    for v in &args[2..] {
        let (density, pca, sigma) = parse_variant(v)?;
        let lp = det
            .localizer()
            .map(|l| l.params().clone())
            .ok_or_else(|| Error::invalid_param("checkpoint", "has no localizer"))?
            .density(density)
            .pca_dim(pca)
            .sigma(sigma);
        let synthetic = match holdout {
            h if h > 0.0 => format!("{:.1}", 100.0 * synthetic_auroc(&mut det, &lp, &data, h)?),
            _ => "—".to_string(),
        };
        let t = Instant::now();
        det.refit_localizer(lp, &data)?;
        let fit = t.elapsed().as_secs_f64();
        let report = det.evaluate(&data)?;
        let loc = det.localizer().expect("refitted");
        let mut tops = Vec::with_capacity(data.test.len());
        for s in &data.test {
            tops.push(top_mean(
                &loc.input_map(&cutpaste::data::load_rgb(&s.path)?)?,
            ));
        }
        let pct = |x: Option<f64>| x.map_or("—".to_string(), |x| format!("{:.1}", 100.0 * x));
        println!(
            "| {v} | {:.1} | {:.1} | {} | {} | {fit:.0} | {:.1} | {synthetic} |",
            100.0 * report.image_auroc,
            100.0 * roc_auc(&tops, &labels)?,
            pct(report.pixel_auroc),
            pct(report.aupro),
            report.score_ms_per_image
        );
    }
    Ok(())
}
