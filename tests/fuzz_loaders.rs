//! Fuzzed loaders: valid PNG, JPEG and detector-checkpoint bytes under random truncations, bit
//! flips and header edits (PNG IHDR fields and chunk lengths, JPEG SOF fields and segment
//! lengths, safetensors length prefix and JSON header, including the detector's `params`
//! metadata). Every case must end in a typed error or a valid result (a checkpoint that loads
//! must also score an image), never a panic, and the largest single allocation on the loading
//! thread must stay within the decoder's limit ([`MAX_DECODE_BYTES`]).
//!
//! ```text
//! cargo test --test fuzz_loaders                                        # fast: 64 / 64 / 24 cases
//! CUTPASTE_FUZZ_CASES=10000 cargo test --test fuzz_loaders -- --nocapture --test-threads 1
//! ```
//! Each fuzz test prints its case count and outcomes, e.g.
//! `fuzz png: 10000 cases, {"decoded": 1650, "Image": 8350}`.
use cutpaste::data::image_io::MAX_DECODE_BYTES;
use cutpaste::data::synthetic::{SyntheticKind, SyntheticSpec};
use cutpaste::model::Precision;
use cutpaste::prelude::*;
use image::{ImageFormat, RgbImage};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use serde_json::Value;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Mutex, OnceLock};

mod common;

/// Records the largest single allocation made on each thread (Rust allocations; libtorch's own
/// C++ allocations are bounded by the checkpoint checks instead).
struct Tracking;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    let _ = LARGEST.try_with(|c| c.set(c.get().max(size)));
}

// SAFETY: forwards every call to the system allocator unchanged; `note` does not allocate.
unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: forwards the caller's contract to the system allocator unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: forwards the caller's contract to the system allocator unchanged.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: forwards the caller's contract to the system allocator unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwards the caller's contract to the system allocator unchanged.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Tracking = Tracking;

/// Cases per fuzz test: `CUTPASTE_FUZZ_CASES`, else `fast`.
fn cases(fast: u32) -> u32 {
    std::env::var("CUTPASTE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(fast)
}

/// Runs `check` on `cases` values of `strategy` from a fixed seed; `check` returns the outcome's
/// name (counted and printed) or fails the case. Panics inside `check` fail the test.
fn fuzz<S: Strategy>(
    name: &str,
    seed: u8,
    cases: u32,
    strategy: S,
    check: impl Fn(S::Value) -> Result<String, TestCaseError>,
) {
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &[seed; 32]);
    let mut runner = TestRunner::new_with_rng(config, rng);
    let counts = Mutex::new(BTreeMap::<String, usize>::new());
    let result = runner.run(&strategy, |v| {
        let outcome = check(v)?;
        *counts.lock().unwrap().entry(outcome).or_default() += 1;
        Ok(())
    });
    let counts = counts.into_inner().unwrap();
    eprintln!(
        "fuzz {name}: {} cases, {counts:?}",
        counts.values().sum::<usize>()
    );
    if let Err(e) = result {
        panic!("fuzz {name}: {e}");
    }
}

/// A mutation of a file's bytes.
#[derive(Debug, Clone)]
enum Mutation {
    /// Keep the first `n` bytes (modulo the length).
    Truncate(usize),
    /// XOR `1 << bit` into the byte at each position (modulo the length).
    Flip(Vec<(usize, u8)>),
    /// A format-specific header edit: (field selector, value, extra selector).
    Header(usize, u64, usize),
}

fn extreme_u64() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(1),
        Just(u16::MAX as u64),
        Just(u32::MAX as u64),
        Just(i32::MAX as u64),
        Just(u64::MAX),
        Just(1 << 62),
        0u64..70_000,
        any::<u64>(),
    ]
}

/// Truncations, flips anywhere, flips in the first `header` bytes, and header edits.
fn mutations(header: usize) -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<usize>().prop_map(Mutation::Truncate),
        vec((any::<usize>(), 0u8..8), 1..6).prop_map(Mutation::Flip),
        vec((0..header, 0u8..8), 1..4).prop_map(Mutation::Flip),
        (any::<usize>(), extreme_u64(), any::<usize>())
            .prop_map(|(f, v, x)| Mutation::Header(f, v, x)),
    ]
}

/// Applies truncations and flips; header edits go to `header_edit`.
fn mutate(
    bytes: &[u8],
    m: &Mutation,
    header_edit: impl Fn(&mut Vec<u8>, usize, u64, usize),
) -> Vec<u8> {
    let mut b = bytes.to_vec();
    match m {
        Mutation::Truncate(n) => b.truncate(n % bytes.len()),
        Mutation::Flip(flips) => {
            for &(pos, bit) in flips {
                let i = pos % b.len();
                b[i] ^= 1 << bit;
            }
        }
        Mutation::Header(f, v, x) => header_edit(&mut b, *f, *v, *x),
    }
    b
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= byte as u32;
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

/// Start offsets of the PNG chunks of `b` (walking the length fields).
fn png_chunks(b: &[u8]) -> Vec<usize> {
    let mut starts = Vec::new();
    let mut at = 8;
    while at + 12 <= b.len() {
        starts.push(at);
        let len = u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]) as usize;
        at += 12 + len;
    }
    starts
}

/// PNG: IHDR fields (width, height, depth, colour type, compression, filter, interlace), with
/// or without a corrected CRC; the length field of any chunk; or a bit flip inside a chunk's
/// data with its CRC corrected (so it reaches the decoder instead of the CRC check).
fn png_header_edit(b: &mut [u8], field: usize, value: u64, extra: usize) {
    const IHDR: [(usize, usize); 7] = [
        (16, 4),
        (20, 4),
        (24, 1),
        (25, 1),
        (26, 1),
        (27, 1),
        (28, 1),
    ];
    let fix_crc = |b: &mut [u8], at: usize| {
        let len = u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]) as usize;
        let crc = crc32(&b[at + 4..at + 8 + len]);
        b[at + 8 + len..at + 12 + len].copy_from_slice(&crc.to_be_bytes());
    };
    let chunks = png_chunks(b);
    match field % 10 {
        f @ 0..=6 => {
            let (at, len) = IHDR[f];
            b[at..at + len].copy_from_slice(&value.to_be_bytes()[8 - len..]);
            if !extra.is_multiple_of(4) {
                fix_crc(b, 8);
            }
        }
        7 => {
            let at = chunks[extra % chunks.len()];
            b[at..at + 4].copy_from_slice(&(value as u32).to_be_bytes());
        }
        _ => {
            let at = chunks[extra % chunks.len()];
            let len = u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]) as usize;
            if len > 0 {
                b[at + 8 + (value as usize % len)] ^= 1 << (extra % 8);
                fix_crc(b, at);
            }
        }
    }
}

/// JPEG: SOF fields (precision, height, width, components, a component's sampling factors or
/// quantisation table), or the length of any marker segment before the scan data.
fn jpeg_header_edit(b: &mut [u8], field: usize, value: u64, extra: usize) {
    let mut segments = Vec::new(); // (marker position, marker)
    let mut at = 2;
    while at + 4 <= b.len() && b[at] == 0xFF {
        let marker = b[at + 1];
        segments.push((at, marker));
        if marker == 0xDA {
            break;
        }
        at += 2 + u16::from_be_bytes([b[at + 2], b[at + 3]]) as usize;
    }
    let sof = segments.iter().find(|(_, m)| matches!(m, 0xC0..=0xC2));
    match (field % 7, sof) {
        (f @ 0..=5, Some(&(s, _))) => {
            // offsets inside SOF: precision +4, height +5, width +7, components +9, then
            // per component (id, sampling, table) from +10
            let (off, len) = [(4, 1), (5, 2), (7, 2), (9, 1), (11, 1), (12, 1)][f];
            let off = if f >= 4 { off + 3 * (extra % 3) } else { off };
            let be = value.to_be_bytes();
            if s + off + len <= b.len() {
                b[s + off..s + off + len].copy_from_slice(&be[8 - len..]);
            }
        }
        _ if !segments.is_empty() => {
            let (s, _) = segments[extra % segments.len()];
            b[s + 2..s + 4].copy_from_slice(&(value as u16).to_be_bytes());
        }
        _ => {}
    }
}

fn test_image(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x * 5 + y) as u8, (y * 7) as u8, ((x * y) % 251) as u8])
    })
}

fn encode(img: image::DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap();
    out.into_inner()
}

/// Valid images of one format: RGB8 and 16-bit grey (PNG) or RGB and grey (JPEG).
fn seeds(format: ImageFormat) -> Vec<Vec<u8>> {
    let rgb = image::DynamicImage::ImageRgb8(test_image(48, 40));
    let grey = match format {
        ImageFormat::Png => image::DynamicImage::ImageLuma16(rgb.to_luma16()),
        _ => image::DynamicImage::ImageLuma8(rgb.to_luma8()),
    };
    vec![encode(rgb, format), encode(grey, format)]
}

/// Decodes `bytes` (written to `path`) as an RGB image and as a mask: each result must be a
/// valid image or an `Error::Image`/`Error::Io` naming the file, within the allocation limit.
fn check_image(path: &Path, bytes: &[u8]) -> Result<String, TestCaseError> {
    std::fs::write(path, bytes).unwrap();
    LARGEST.with(|c| c.set(0));
    let rgb = cutpaste::data::load_rgb(path);
    let mask = cutpaste::data::load_mask(path);
    let largest = LARGEST.with(|c| c.get()) as u64;
    prop_assert!(
        largest <= MAX_DECODE_BYTES,
        "allocated {largest} bytes at once"
    );
    let mut outcome = String::new();
    for r in [rgb.map(|i| i.dimensions()), mask.map(|m| m.dimensions())] {
        match r {
            Ok((w, h)) => {
                prop_assert!(w > 0 && h > 0);
                outcome = "decoded".into();
            }
            Err(e @ (Error::Image { .. } | Error::Io { .. })) => {
                let msg = e.to_string();
                prop_assert!(msg.contains(&path.display().to_string()), "{msg}");
                if outcome.is_empty() {
                    outcome = format!("{e:?}").split([' ', '{']).next().unwrap().into();
                }
            }
            Err(e) => return Err(TestCaseError::fail(format!("untyped outcome {e:?}"))),
        }
    }
    Ok(outcome)
}

fn fuzz_image(
    name: &str,
    seed: u8,
    format: ImageFormat,
    header_edit: fn(&mut [u8], usize, u64, usize),
) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("case.{name}"));
    let seeds = seeds(format);
    let strategy = (0..seeds.len(), mutations(64));
    fuzz(name, seed, cases(64), strategy, |(i, m)| {
        let bytes = mutate(&seeds[i], &m, |b, f, v, x| header_edit(b, f, v, x));
        check_image(&path, &bytes)
    });
}

#[test]
fn fuzz_png() {
    fuzz_image("png", 1, ImageFormat::Png, png_header_edit);
}

#[test]
fn fuzz_jpeg() {
    fuzz_image("jpeg", 2, ImageFormat::Jpeg, jpeg_header_edit);
}

/// A tiny fitted detector's checkpoint bytes (32 px, 1 step, synthetic threshold) and an image
/// to score.
fn checkpoint() -> &'static (Vec<u8>, RgbImage) {
    static CKPT: OnceLock<(Vec<u8>, RgbImage)> = OnceLock::new();
    CKPT.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let root = SyntheticSpec::new(SyntheticKind::Part)
            .side(32)
            .counts(6, 1, 1)
            .seed(1)
            .write(dir.path())
            .unwrap();
        let ds = Dataset::mvtec(root).unwrap();
        let mut det = Detector::params()
            .image_size(32)
            .batch_images(2)
            .training(TrainParams::paper().steps(1))
            .device(Device::Cpu)
            .fast_path(FastPath {
                precision: Precision::Fp32,
                channels_last: false,
            })
            .seed(3)
            .fit(&ds)
            .unwrap();
        let train = ds.load_train(32).unwrap();
        det.threshold_from_synthetic(&train, 0).unwrap();
        (det.to_bytes().unwrap(), train[0].clone())
    })
}

/// The safetensors JSON header of `b` and where the data starts.
fn split_header(b: &[u8]) -> (Value, usize) {
    let n = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
    (serde_json::from_slice(&b[8..8 + n]).unwrap(), 8 + n)
}

/// JSON pointers of every leaf (and every array/object member) under `v`.
fn leaves(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => m.iter().for_each(|(k, c)| {
            out.push(format!("{at}/{k}"));
            leaves(c, format!("{at}/{k}"), out)
        }),
        Value::Array(a) => a.iter().enumerate().for_each(|(i, c)| {
            out.push(format!("{at}/{i}"));
            leaves(c, format!("{at}/{i}"), out)
        }),
        _ => {}
    }
}

/// Replaces (or removes) the value at `pointer` in `root`.
fn edit_json(root: &mut Value, pointer: &str, value: u64, kind: usize) {
    let replacement = match kind % 9 {
        0 => Value::from(value),
        1 => Value::from(-((value >> 1) as i64) - 1),
        2 => Value::from(value as f64 * 1e10),
        3 => Value::from("x"),
        4 => Value::Null,
        5 => Value::from(vec![value]),
        6 => serde_json::json!({}),
        7 => Value::from(true),
        _ => {
            let (parent, key) = pointer.rsplit_once('/').unwrap();
            match root.pointer_mut(parent) {
                Some(Value::Object(m)) => drop(m.remove(key)),
                Some(Value::Array(a)) if !a.is_empty() => drop(a.pop()),
                _ => {}
            }
            return;
        }
    };
    if let Some(slot) = root.pointer_mut(pointer) {
        *slot = replacement;
    }
}

/// Safetensors: the 8-byte header length, or one JSON edit in the tensor table or, half the
/// time, in the `params` metadata (re-serialised, so the header stays parseable JSON).
fn checkpoint_header_edit(b: &mut Vec<u8>, field: usize, value: u64, extra: usize) {
    if field.is_multiple_of(16) {
        b[..8].copy_from_slice(&value.to_le_bytes());
        return;
    }
    let (mut header, data) = split_header(b);
    if field.is_multiple_of(2) {
        let mut params: Value =
            serde_json::from_str(header["__metadata__"]["params"].as_str().unwrap()).unwrap();
        let mut points = Vec::new();
        leaves(&params, String::new(), &mut points);
        edit_json(
            &mut params,
            &points[extra % points.len()],
            value,
            field / 16,
        );
        header["__metadata__"]["params"] = Value::from(params.to_string());
    } else {
        let mut points = Vec::new();
        leaves(&header, String::new(), &mut points);
        let p = points[extra % points.len()].clone();
        edit_json(&mut header, &p, value, field / 16);
    }
    let json = header.to_string().into_bytes();
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&json);
    out.extend_from_slice(&b[data..]);
    *b = out;
}

#[test]
fn fuzz_checkpoint() {
    let (bytes, image) = checkpoint();
    let (header, data) = split_header(bytes);
    // flips: in the header, or in the density's covariance
    let offsets = &header["density.covariance"]["data_offsets"];
    let (start, end) = (
        data + offsets[0].as_u64().unwrap() as usize,
        data + offsets[1].as_u64().unwrap() as usize,
    );
    let strategy = prop_oneof![
        4 => mutations(data),
        1 => vec((start..end, 0u8..8), 1..4).prop_map(Mutation::Flip),
    ];
    let before = vm_hwm_kib();
    fuzz("checkpoint", 3, cases(24), strategy, |m| {
        let b = mutate(bytes, &m, checkpoint_header_edit);
        LARGEST.with(|c| c.set(0));
        let outcome = match Detector::from_bytes(&b, Device::Cpu) {
            Ok(det) => match det.score(image) {
                Ok(_) => "loaded and scored".to_string(),
                Err(e) => format!("loaded, score error {}", variant(&e)),
            },
            Err(e @ (Error::Checkpoint { .. } | Error::WeightsMismatch { .. })) => {
                let msg = e.to_string();
                prop_assert!(msg.contains("<checkpoint bytes>"), "{msg}");
                variant(&e)
            }
            Err(e) => return Err(TestCaseError::fail(format!("untyped outcome {e:?}"))),
        };
        let largest = LARGEST.with(|c| c.get());
        prop_assert!(
            largest <= 2 * bytes.len(),
            "allocated {largest} bytes at once for a {}-byte file",
            bytes.len()
        );
        Ok(outcome)
    });
    // libtorch allocates outside Rust's allocator: bound the whole process's peak instead.
    let grown = vm_hwm_kib().saturating_sub(before);
    assert!(
        grown < 2 << 20,
        "peak RSS grew by {grown} KiB while fuzzing"
    );
}

fn variant(e: &Error) -> String {
    format!("{e:?}")
        .split([' ', '{', '('])
        .next()
        .unwrap()
        .into()
}

/// Peak resident set size of this process (KiB), 0 where `/proc` is unavailable.
fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// A grey PNG whose decoded pixels fit the decoder's limit but whose RGB8 copy does not (a
/// decompression bomb just under the limit): refused before either buffer is allocated.
#[test]
fn bomb_under_the_decoder_limit_is_refused_including_the_conversion() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("grey_bomb.png");
    // 13 000² grey = 169 MB decoded (< 512 MiB) but + 507 MB as RGB8 (> 512 MiB together)
    let side = 13_000u32;
    let file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let enc = image::codecs::png::PngEncoder::new_with_quality(
        file,
        image::codecs::png::CompressionType::Fast,
        image::codecs::png::FilterType::NoFilter,
    );
    let zeros = vec![0u8; (side * side) as usize];
    image::ImageEncoder::write_image(enc, &zeros, side, side, image::ExtendedColorType::L8)
        .unwrap();
    drop(zeros);
    assert!(std::fs::metadata(&path).unwrap().len() < 2 << 20);
    LARGEST.with(|c| c.set(0));
    match cutpaste::data::load_rgb(&path) {
        Err(e @ Error::Image { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains("grey_bomb.png") && msg.contains("limit"),
                "{msg}"
            );
        }
        other => panic!(
            "expected a memory-limit error, got {:?}",
            other.map(|i| i.dimensions())
        ),
    }
    assert!(
        LARGEST.with(|c| c.get()) < 1 << 20,
        "pixel buffers were allocated"
    );
    // the mask loader needs no conversion for grey images: within the limit, it loads
    assert_eq!(
        cutpaste::data::load_mask(&path).unwrap().dimensions(),
        (side, side)
    );
}

/// Rewrites one field of the `params` metadata of the checkpoint.
fn with_param(edit: impl Fn(&mut Value)) -> Vec<u8> {
    common::edit_checkpoint_params(&checkpoint().0, edit)
}

fn checkpoint_error(bytes: &[u8], needle: &str) {
    match Detector::from_bytes(bytes, Device::Cpu) {
        Err(e @ Error::Checkpoint { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains(needle), "'{needle}' not in: {msg}");
        }
        other => panic!("expected a checkpoint error, got {:?}", other.err()),
    }
}

/// Metadata sizes are checked against the file before anything is allocated or scored.
#[test]
fn checkpoint_metadata_cannot_request_huge_allocations() {
    let (bytes, image) = checkpoint();
    let det = Detector::from_bytes(bytes, Device::Cpu).unwrap();
    assert!(det.score(image).unwrap().is_finite());
    // a 10⁸-wide hidden layer would be 200 GB of weights in a 45 MB file
    checkpoint_error(
        &with_param(|p| p["params"]["head"]["hidden"][0] = 100_000_000.into()),
        "head",
    );
    // 10⁹ classes: refused (before any allocation) as not the augmentation's class count
    checkpoint_error(
        &with_param(|p| p["num_classes"] = 1_000_000_000.into()),
        "num_classes",
    );
    // 0 classes (found by the 10,000-case fuzz as an untyped InvalidParam) names the file
    checkpoint_error(&with_param(|p| p["num_classes"] = 0.into()), "num_classes");
    // a damaged training record (a negative or absurd budget; found by the 10,000-case fuzz,
    // which panicked converting it to a Duration) still loads: the budget is only a record;
    // the same values as the parameters' budget are a damaged record naming the problem
    for budget in [-5.0, 1e300] {
        checkpoint_error(
            &with_param(|p| p["params"]["training"]["budget_seconds"] = budget.into()),
            "seconds",
        );
        let b = with_param(|p| {
            p["training_record"] = serde_json::json!([{
                "stage": "image", "budget_seconds": budget, "planned_steps": 2,
                "step_seconds": 0.0, "post_seconds": 0.0, "train_seconds": 0.0
            }])
        });
        let det = Detector::from_bytes(&b, Device::Cpu).unwrap();
        assert!(det.score(image).unwrap().is_finite());
    }
    // a side of 10⁹ pixels would be allocated when scoring
    checkpoint_error(
        &with_param(|p| p["params"]["image_size"] = 1_000_000_000.into()),
        "image_size",
    );
}
