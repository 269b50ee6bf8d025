//! `cutpaste predict`: score image files/folders, print or write CSV.
use crate::options::{check_new_file, parse_device};
use crate::Outcome;
use cutpaste::prelude::*;
use std::io::Write;
use std::path::PathBuf;

/// Score images with a saved detector.
#[derive(clap::Args)]
pub(crate) struct PredictArgs {
    /// A detector written by `cutpaste train`.
    model: PathBuf,
    /// Image files and/or folders of images (not recursive).
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// Write the CSV here instead of stdout (an existing file is kept unless --force).
    #[arg(long)]
    csv: Option<PathBuf>,
    /// Override the detector's stored threshold (scores above it are anomalous).
    #[arg(long, allow_negative_numbers = true)]
    threshold: Option<f32>,
    /// Exit with code 3 when any image is anomalous (for scripts and CI gates).
    #[arg(long)]
    fail_on_anomaly: bool,
    /// auto (CUDA when available), cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto", value_parser = parse_device)]
    device: Device,
    /// Replace --csv if it exists.
    #[arg(long)]
    force: bool,
}

/// One CSV field, quoted when it needs to be.
fn field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

pub(crate) fn run(a: PredictArgs) -> Result<Outcome, Box<dyn std::error::Error>> {
    if let Some(p) = &a.csv {
        check_new_file(p, a.force)?;
    }
    let mut detector = Detector::load(&a.model, a.device)?;
    if let Some(t) = a.threshold {
        detector.set_threshold(t)?;
    }
    let threshold = detector.threshold();
    if threshold.is_none() {
        eprintln!("note: the detector has no threshold (train with --threshold, or pass --threshold T); the `anomalous` column is empty");
    }
    let paths = cutpaste::data::collect_images(&a.inputs)?;
    let bar = crate::progress::bar(paths.len() as u64, "scoring");
    let results = detector.score_files(&paths, |done| bar.set_position(done as u64))?;
    bar.finish_and_clear();
    let mut csv = String::from("path,score,anomalous,error\n");
    let (mut anomalous, mut unreadable) = (0usize, 0usize);
    for (p, r) in paths.iter().zip(&results) {
        let path = field(&p.display().to_string());
        match r {
            Ok(s) => {
                let flag = threshold.map(|t| *s > t);
                if flag == Some(true) {
                    anomalous += 1;
                }
                let flag = flag.map_or(String::new(), |f| f.to_string());
                csv += &format!("{path},{s},{flag},\n");
            }
            Err(e) => {
                unreadable += 1;
                eprintln!("warning: {e}");
                csv += &format!("{path},,,{}\n", field(&e.to_string()));
            }
        }
    }
    match &a.csv {
        Some(p) => {
            cutpaste::atomic_file::write_atomic(p, csv.as_bytes())?;
            eprintln!("wrote {} rows to {}", paths.len(), p.display());
        }
        None => std::io::stdout().write_all(csv.as_bytes())?,
    }
    eprintln!(
        "{} images: {anomalous} anomalous, {unreadable} unreadable",
        paths.len()
    );
    if unreadable > 0 {
        return Ok(Outcome::Code(4));
    }
    if a.fail_on_anomaly && anomalous > 0 {
        return Ok(Outcome::Code(3));
    }
    Ok(Outcome::Ok)
}
