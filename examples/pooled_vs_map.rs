//! Image AUROC of a dense-recipe detector scored two ways: the mean of the top 1 % of its anomaly
//! map (the dense recipe's image score) and the Gaussian of the patch model's pooled features of
//! the whole image at the detector's input side (64² by default; PAPER.md stage 2), plus their
//! rank average. One trained model, so the rows differ only in how an image is scored.
//!
//! ```text
//! cargo run --release --example pooled_vs_map -- out/bench/final/elpv_mono-s0/model.safetensors ../shared/data/elpv/mono
//! ```
//! prints one JSON line: `{"map":85.4,"pooled":…,"rank_mean":…,"n":431}` (AUROC in %); `rank_mean` ranks over the test set itself (an upper reference, not usable
//! online), `z_sum` standardises each score by the training images' scores and sums them, `z_held` by
//! the scores of the 10 % of training images that `cutpaste train` held out (out of sample),
//! `z_cv` standardises the map by the kept training images' scores and the pooled score by its
//! 5-fold cross-validated scores (what `fit` alone can do). `REFIT_POOLED=1` refits the pooled
//! Gaussian on the kept images' features as this process computes them before scoring (with
//! `scripts/set_fast_path.py`, the features of another fast path). With `POOLED_VS_MAP_DUMP=FILE` set,
//! every score is also written to FILE as JSON.
use cutpaste::detector::Standardiser;
use cutpaste::metrics::roc_auc;
use cutpaste::prelude::*;
use image::RgbImage;

#[path = "../src/bin/cutpaste/malloc_conf.rs"]
mod malloc_conf;

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Ranks of `v` (0 = smallest), as floats; ties keep their order.
fn ranks(v: &[f32]) -> Vec<f32> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
    let mut r = vec![0.0; v.len()];
    for (rank, &i) in idx.iter().enumerate() {
        r[i] = rank as f32;
    }
    r
}

/// The images of `samples`, decoded in batches of 32 files.
fn batches(samples: &[cutpaste::data::Sample]) -> impl Iterator<Item = Result<Vec<RgbImage>>> + '_ {
    samples.chunks(32).map(|chunk| {
        chunk
            .iter()
            .map(|s| cutpaste::data::load_rgb(&s.path))
            .collect()
    })
}

/// (map, pooled) scores of `samples` ([`Detector::score_parts`]).
fn both_scores(det: &Detector, samples: &[cutpaste::data::Sample]) -> Result<(Vec<f32>, Vec<f32>)> {
    let (mut map, mut pooled) = (Vec::new(), Vec::new());
    for images in batches(samples) {
        let (m, p) = det
            .score_parts(&images?)?
            .ok_or_else(|| Error::invalid_param("CHECKPOINT", "the detector has no localizer"))?;
        map.extend(m);
        pooled.extend(p);
    }
    Ok((map, pooled))
}

/// The pooled features of `samples` ([`Detector::embed`]).
fn embed(det: &Detector, samples: &[cutpaste::data::Sample]) -> Result<ndarray::Array2<f32>> {
    let rows = batches(samples)
        .map(|images| det.embed(&images?))
        .collect::<Result<Vec<_>>>()?;
    let views: Vec<_> = rows.iter().map(|r| r.view()).collect();
    ndarray::concatenate(ndarray::Axis(0), &views)
        .map_err(|e| Error::invalid_param("features", e.to_string()))
}

/// `(v − mean(reference)) / std(reference)` ([`Standardiser`]).
fn standardise(v: &[f32], reference: &[f32]) -> Result<Vec<f32>> {
    let z = Standardiser::fit(reference, "reference scores")?;
    Ok(v.iter().map(|&x| z.apply(x)).collect())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() != 2 {
        eprintln!("usage: pooled_vs_map CHECKPOINT DATA");
        std::process::exit(2);
    }
    let mut det = Detector::load(&args[0], Device::Cpu)?;
    let data = Dataset::mvtec_with(
        &args[1],
        MvtecOptions {
            allow_missing_masks: true,
        },
    )?;
    // the images `cutpaste train --holdout 0.1` held out of training (every k-th, evenly spaced)
    let n = data.train.len();
    let k = ((0.1 * n as f64).round() as usize).max(1);
    let held: Vec<_> = (0..k)
        .map(|i| data.train[(2 * i + 1) * n / (2 * k)].clone())
        .collect();
    if std::env::var("REFIT").is_ok_and(|v| v == "1") {
        // refit the localizer's Gaussians with the current code on the images training used
        // (the trained patch network is kept): a checkpoint saved by an older version scores
        // as this version's fit would
        let mut kept = data.clone();
        kept.train
            .retain(|s| !held.iter().any(|h| h.path == s.path));
        let mut lp = det
            .localizer()
            .ok_or_else(|| Error::invalid_param("REFIT", "the detector has no localizer"))?
            .params()
            .clone();
        match std::env::var("LOC_COV").as_deref() {
            Ok("diagonal") => lp = lp.covariance(PatchCovariance::Diagonal),
            Ok("full") => lp = lp.covariance(PatchCovariance::Full),
            _ => {}
        }
        det.refit_localizer(lp, &kept)?;
    }
    let labels: Vec<bool> = data.test.iter().map(|s| s.is_anomalous()).collect();
    let (map, mut pooled) = both_scores(&det, &data.test)?;
    let (train_map, mut train_pooled) = both_scores(&det, &data.train)?;
    let (held_map, mut held_pooled) = both_scores(&det, &held)?;
    // the kept (trained-on) images: everything but the held-out 10 %
    let kept: Vec<_> = data
        .train
        .iter()
        .filter(|s| !held.iter().any(|h| h.path == s.path))
        .cloned()
        .collect();
    let kept_feats = embed(&det, &kept)?;
    if std::env::var("REFIT_POOLED").is_ok_and(|v| v == "1") {
        // refit the pooled Gaussian on the kept images' features as this process computes them
        // (e.g. in fp32 for a checkpoint trained in bf16) and score with it
        let fitted = det.density().params().fit(kept_feats.view())?;
        let rescore = |samples: &[cutpaste::data::Sample]| -> Result<Vec<f32>> {
            Ok(fitted.score(embed(&det, samples)?.view())?.to_vec())
        };
        pooled = rescore(&data.test)?;
        train_pooled = rescore(&data.train)?;
        held_pooled = rescore(&held)?;
    }
    let (hm, hp) = (
        standardise(&map, &held_map)?,
        standardise(&pooled, &held_pooled)?,
    );
    let z_held: Vec<f32> = hm.iter().zip(&hp).map(|(a, b)| a + b).collect();
    // standardise each score by the training images' scores (no test statistics), then sum
    let (zm, zp) = (
        standardise(&map, &train_map)?,
        standardise(&pooled, &train_pooled)?,
    );
    let z_sum: Vec<f32> = zm.iter().zip(&zp).map(|(a, b)| a + b).collect();
    // what `fit` alone can compute: the kept (trained-on) images' in-sample map scores, and
    // 5-fold cross-validated pooled scores (the pooled density refitted without each fifth)
    let (kept_map, _) = both_scores(&det, &kept)?;
    let folds = 5;
    let mut cv = vec![0f32; kept.len()];
    for f in 0..folds {
        let (tr, te): (Vec<usize>, Vec<usize>) = (0..kept.len()).partition(|i| i % folds != f);
        let fitted = det
            .density()
            .params()
            .fit(kept_feats.select(ndarray::Axis(0), &tr).view())?;
        let s = fitted.score(kept_feats.select(ndarray::Axis(0), &te).view())?;
        for (j, &i) in te.iter().enumerate() {
            cv[i] = s[j];
        }
    }
    let (cm, cp) = (standardise(&map, &kept_map)?, standardise(&pooled, &cv)?);
    let z_cv: Vec<f32> = cm.iter().zip(&cp).map(|(a, b)| a + b).collect();
    let mean = |v: &[f32]| v.iter().map(|&x| f64::from(x)).sum::<f64>() / v.len().max(1) as f64;
    eprintln!(
        "pooled: held/in-sample mean {:.2}, cv/in-sample mean {:.2}; map: held/in-sample mean {:.2}",
        mean(&held_pooled) / mean(&train_pooled),
        mean(&cv) / mean(&train_pooled),
        mean(&held_map) / mean(&kept_map)
    );
    let (rm, rp) = (ranks(&map), ranks(&pooled));
    let rank_mean: Vec<f32> = rm.iter().zip(&rp).map(|(a, b)| a + b).collect();
    if let Ok(path) = std::env::var("POOLED_VS_MAP_DUMP") {
        // every score, for trying other combinations without rescoring
        let dump = serde_json::json!({
            "labels": labels, "map": map, "pooled": pooled, "held_map": held_map,
            "held_pooled": held_pooled, "kept_map": kept_map, "cv_pooled": cv,
            "train_pooled": train_pooled, "n_train": n,
        });
        std::fs::write(&path, dump.to_string()).map_err(|e| Error::io(&path, e))?;
    }
    let auc = |s: &[f32]| roc_auc(s, &labels).map(|a| (a * 1000.0).round() / 10.0);
    if std::env::var("PIXEL").is_ok_and(|v| v == "1") {
        // the localizer's pixel AUROC and AUPRO (`eval`'s, with the detector as it is now)
        let r = det.evaluate(&data)?;
        let pct = |v: Option<f64>| v.map(|a| (a * 1000.0).round() / 10.0);
        eprintln!(
            "{{\"pixel_auroc\":{:?},\"aupro\":{:?}}}",
            pct(r.pixel_auroc),
            pct(r.aupro)
        );
    }
    println!(
        "{{\"map\":{},\"pooled\":{},\"rank_mean\":{},\"z_sum\":{},\"z_held\":{},\"z_cv\":{},\"n\":{}}}",
        auc(&map)?,
        auc(&pooled)?,
        auc(&rank_mean)?,
        auc(&z_sum)?,
        auc(&z_held)?,
        auc(&z_cv)?,
        labels.len()
    );
    Ok(())
}
