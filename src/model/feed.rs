//! How training batches reach the network: background threads prepare the next batches while the
//! network computes the current one ([`Prefetch`]).
//!
//! On the CPU one thread prepares one batch ahead and converts it to normalised fp32 NCHW (the
//! network itself uses every core). On CUDA several workers prepare whole batches in parallel
//! (step `s` by worker `s mod workers`; the network takes them in step order, so the batches are
//! the same for any worker count), each sending its images to the GPU as 8-bit NHWC from pinned
//! memory (a quarter of the fp32 bytes, copied asynchronously) and normalising them there, which
//! gives the channels-last layout directly and the same values bit for bit as the CPU
//! conversion (`pixel * scale - shift` in f32 on both).
use super::source::{Batch, BatchSource};
use crate::data::{images_to_nchw, Normalization};
use crate::error::{Error, Result};
use image::RgbImage;
use std::path::PathBuf;
use std::sync::mpsc;
use tch::{Device, Kind, Tensor};

/// How training batches are prepared ahead of the network: by how many threads, how far ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Prefetch {
    /// Threads preparing whole batches in parallel (≥ 1); worker `k` prepares steps `k`,
    /// `k + workers`, … and the network takes them in step order. Sources without
    /// [`BatchSource::fork`] use one.
    pub workers: usize,
    /// Prepared batches each worker may hold ready besides the one it is working on (≥ 1).
    pub depth: usize,
}

impl Prefetch {
    /// One worker, one batch ahead.
    pub const SINGLE: Prefetch = Prefetch {
        workers: 1,
        depth: 1,
    };

    /// The default for training on `device` on a machine with `cores` CPU cores:
    /// [`Self::SINGLE`] on the CPU (the network already uses every core, and a batch's
    /// augmentations run in parallel with rayon); on CUDA half the cores as workers (1 to 8),
    /// two batches ahead each, since the GPU consumes thousands of images a second.
    pub fn for_device(device: Device, cores: usize) -> Self {
        match device {
            Device::Cpu => Self::SINGLE,
            _ => Prefetch {
                workers: (cores / 2).clamp(1, 8),
                depth: 2,
            },
        }
    }

    /// [`Self::for_device`] with this machine's cores.
    pub fn auto(device: Device) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self::for_device(device, cores)
    }

    /// Checks that both counts are ≥ 1.
    pub fn check(&self) -> Result<()> {
        if self.workers == 0 || self.depth == 0 {
            return Err(Error::invalid_param(
                "prefetch",
                format!(
                    "workers and depth must be >= 1, got {} and {}",
                    self.workers, self.depth
                ),
            ));
        }
        Ok(())
    }
}

/// A batch converted for the network: `[N, 3, H, W]` fp32 normalised images (on the CPU, or
/// already on the GPU in channels-last memory), `[N]` i64 labels on the CPU.
pub(crate) struct Prepared {
    pub(crate) images: Tensor,
    pub(crate) labels: Tensor,
}

/// What the feeding threads need to know to prepare batches.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FeedSpec {
    pub(crate) num_classes: i64,
    pub(crate) norm: Normalization,
    pub(crate) device: Device,
    pub(crate) prefetch: Prefetch,
}

/// `[N, 3, H, W]` normalised fp32 images on `device`, sent there as 8-bit NHWC (from pinned
/// memory, asynchronously, when `device` is a GPU) and normalised there; NCHW by shape,
/// channels-last in memory. Bit-identical to [`crate::data::images_to_tensor`].
pub(crate) fn normalize_on_device(
    images: &[RgbImage],
    norm: &Normalization,
    device: Device,
) -> Result<Tensor> {
    norm.check()?;
    let (w, h) = crate::data::tensor::batch_dimensions(images)?;
    let mut bytes = Vec::with_capacity(images.len() * 3 * w as usize * h as usize);
    for img in images {
        bytes.extend_from_slice(img.as_raw());
    }
    let host = Tensor::f_from_slice(&bytes)?.f_reshape([
        images.len() as i64,
        i64::from(h),
        i64::from(w),
        3,
    ])?;
    let gpu = device.is_cuda();
    // `_pin_memory` with the device picks that device's (caching) pinned allocator; the public
    // `pin_memory(device)` would print a deprecation warning for every batch.
    let host = if gpu {
        host.f_internal_pin_memory(device)?
    } else {
        host
    };
    let x = host.f_to_device_(device, Kind::Uint8, gpu, false)?;
    let (scale, shift) = norm.pixel_affine();
    let scale = Tensor::f_from_slice(&scale)?.f_to_device(device)?;
    let shift = Tensor::f_from_slice(&shift)?.f_to_device(device)?;
    let x = x.f_to_kind(Kind::Float)?.f_mul(&scale)?.f_sub(&shift)?;
    Ok(x.f_permute([0, 3, 1, 2])?)
}

/// Checks a batch against `num_classes` and converts it (runs on a feeding thread).
fn prepare(batch: Batch, step: usize, spec: &FeedSpec) -> Result<Prepared> {
    let num_classes = spec.num_classes;
    if batch.images.is_empty() {
        return Err(Error::EmptyDataset {
            path: PathBuf::from(format!("<training batch of step {step}>")),
        });
    }
    if batch.images.len() != batch.labels.len() {
        return Err(Error::invalid_input(
            "batch.labels",
            format!(
                "step {step}: {} images but {} labels; give one label per view",
                batch.images.len(),
                batch.labels.len()
            ),
        ));
    }
    if let Some(l) = batch
        .labels
        .iter()
        .find(|&&l| !(0..num_classes).contains(&l))
    {
        return Err(Error::invalid_input(
            "batch.labels",
            format!("step {step}: label {l} is outside 0..{num_classes}; the classifier has {num_classes} classes"),
        ));
    }
    let images = match spec.device {
        Device::Cpu => {
            let (buf, shape) = images_to_nchw(&batch.images, &spec.norm)?;
            let shape: Vec<i64> = shape.iter().map(|&s| s as i64).collect();
            // [n*3*h*w] -> [n, 3, h, w]
            Tensor::f_from_slice(&buf)?.f_reshape(&shape)?
        }
        device => normalize_on_device(&batch.images, &spec.norm, device)?,
    };
    let labels = Tensor::f_from_slice(&batch.labels)?;
    Ok(Prepared { images, labels })
}

/// The prepared batches in step order, from the workers' channels in turn.
pub(crate) struct Feed {
    channels: Vec<mpsc::Receiver<Result<Prepared>>>,
    next: usize,
}

impl Feed {
    /// The batch of the next step (or the error preparing it).
    pub(crate) fn next_batch(&mut self) -> Result<Prepared> {
        let rx = &self.channels[self.next % self.channels.len()];
        self.next += 1;
        rx.recv().map_err(|_| {
            Error::internal("the batch source thread ended early (did the BatchSource panic?)")
        })?
    }
}

/// Prepares `steps` of `source` on one feeding thread, sending each into `tx` until the
/// receiver is gone or a batch fails (the failure is sent first).
fn produce<S: BatchSource>(
    source: &mut S,
    steps: impl Iterator<Item = usize>,
    spec: &FeedSpec,
    tx: mpsc::SyncSender<Result<Prepared>>,
) {
    for step in steps {
        let prepared = source.batch(step).and_then(|b| prepare(b, step, spec));
        let failed = prepared.is_err();
        if tx.send(prepared).is_err() || failed {
            break;
        }
    }
}

/// Runs `consume` with the [`Feed`] of prepared batches for `steps`, produced by `source` (and
/// its forks, up to `spec.prefetch.workers`) on scoped background threads, each at most
/// `spec.prefetch.depth` batches ahead. When `consume` returns (done, stopped or failed) the
/// feed is dropped, which ends the producers.
pub(crate) fn with_prefetch<S: BatchSource, T>(
    source: &mut S,
    steps: std::ops::Range<usize>,
    spec: FeedSpec,
    consume: impl FnOnce(&mut Feed) -> T,
) -> T {
    let wanted = spec.prefetch.workers.max(1);
    let mut forks: Vec<S> = Vec::new();
    while forks.len() + 1 < wanted {
        match source.fork() {
            Some(f) => forks.push(f),
            None => break,
        }
    }
    let workers = forks.len() + 1;
    let depth = spec.prefetch.depth.max(1);
    std::thread::scope(|scope| {
        let spec = &spec;
        let mut channels = Vec::with_capacity(workers);
        let mut channel = || {
            let (tx, rx) = mpsc::sync_channel::<Result<Prepared>>(depth);
            channels.push(rx);
            tx
        };
        // Worker 0 uses `source` itself, worker k >= 1 fork k - 1.
        let (tx, own_steps) = (channel(), steps.clone().step_by(workers));
        scope.spawn(move || produce(source, own_steps, spec, tx));
        for (k, fork) in forks.iter_mut().enumerate() {
            let (tx, fork_steps) = (channel(), steps.clone().skip(k + 1).step_by(workers));
            scope.spawn(move || produce(fork, fork_steps, spec, tx));
        }
        let mut feed = Feed { channels, next: 0 };
        let out = consume(&mut feed);
        drop(feed);
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ToySource;

    #[test]
    fn bad_batches_are_typed_errors() {
        let spec = FeedSpec {
            num_classes: 2,
            norm: Normalization::IMAGENET,
            device: Device::Cpu,
            prefetch: Prefetch::SINGLE,
        };
        let empty = prepare(Batch::default(), 3, &spec);
        assert!(matches!(empty, Err(Error::EmptyDataset { .. })));
        let img = RgbImage::new(8, 8);
        let bad_label = Batch {
            images: vec![img.clone()],
            labels: vec![2],
        };
        assert!(matches!(
            prepare(bad_label, 0, &spec),
            Err(Error::InvalidInput { .. })
        ));
        let short = Batch {
            images: vec![img.clone(), img],
            labels: vec![0],
        };
        assert!(matches!(
            prepare(short, 0, &spec),
            Err(Error::InvalidInput { .. })
        ));
    }

    /// Every prepared batch of `steps`, in the order the network would get them.
    fn drain<S: BatchSource>(source: &mut S, steps: usize, prefetch: Prefetch) -> Vec<Prepared> {
        let spec = FeedSpec {
            num_classes: 3,
            norm: Normalization::IMAGENET,
            device: Device::Cpu,
            prefetch,
        };
        with_prefetch(source, 2..2 + steps, spec, |feed| {
            (0..steps).map(|_| feed.next_batch().unwrap()).collect()
        })
    }

    #[test]
    fn batches_are_identical_and_in_step_order_for_any_worker_count() {
        let imgs = ToySource::synthetic_images(5, 32, 3);
        let source = ToySource::new(imgs, 3, 4).unwrap().three_way();
        let reference = drain(&mut source.clone(), 7, Prefetch::SINGLE);
        for (workers, depth) in [(2, 1), (3, 2), (8, 1)] {
            let got = drain(&mut source.clone(), 7, Prefetch { workers, depth });
            assert_eq!(got.len(), reference.len());
            for (step, (a, b)) in got.iter().zip(&reference).enumerate() {
                assert!(a.images.equal(&b.images), "{workers} workers, step {step}");
                assert!(a.labels.equal(&b.labels), "{workers} workers, step {step}");
            }
        }
        // Step order, not arrival order: batch k is the source's batch for step 2 + k.
        let direct = source.clone().batch(5).unwrap();
        let spec = FeedSpec {
            num_classes: 3,
            norm: Normalization::IMAGENET,
            device: Device::Cpu,
            prefetch: Prefetch::SINGLE,
        };
        let direct = prepare(direct, 5, &spec).unwrap();
        assert!(reference[3].images.equal(&direct.images));
        // Consecutive batches differ (the check above is not vacuous).
        assert!(!reference[0].images.equal(&reference[1].images));
    }

    #[test]
    fn a_failing_step_reaches_the_network_at_its_turn_with_several_workers() {
        let imgs = ToySource::synthetic_images(2, 16, 0);
        let toy = ToySource::new(imgs, 1, 0).unwrap();
        #[derive(Clone)]
        struct FailAt(ToySource, usize);
        impl BatchSource for FailAt {
            fn batch(&mut self, step: usize) -> Result<Batch> {
                if step == self.1 {
                    return Ok(Batch::default()); // empty: an error in `prepare`
                }
                self.0.batch(step)
            }
            fn fork(&self) -> Option<Self> {
                Some(self.clone())
            }
        }
        let spec = FeedSpec {
            num_classes: 2,
            norm: Normalization::IMAGENET,
            device: Device::Cpu,
            prefetch: Prefetch {
                workers: 3,
                depth: 1,
            },
        };
        let results: Vec<bool> = with_prefetch(&mut FailAt(toy, 4), 0..6, spec, |feed| {
            (0..5).map(|_| feed.next_batch().is_ok()).collect()
        });
        assert_eq!(results, [true, true, true, true, false]);
    }

    #[test]
    fn closures_without_fork_run_on_one_worker() {
        let imgs = ToySource::synthetic_images(2, 16, 0);
        let mut toy = ToySource::new(imgs, 1, 0).unwrap();
        let mut calls = Vec::new();
        let mut closure = |step: usize| {
            calls.push(step);
            toy.batch(step)
        };
        assert!(BatchSource::fork(&closure).is_none());
        let got = drain(
            &mut closure,
            4,
            Prefetch {
                workers: 4,
                depth: 1,
            },
        );
        assert_eq!(got.len(), 4);
        assert_eq!(calls, [2, 3, 4, 5]);
    }

    #[test]
    fn device_normalisation_is_bit_identical_to_the_cpu_conversion() {
        let imgs = ToySource::synthetic_images(3, 24, 8);
        for norm in [Normalization::IMAGENET, Normalization::UNIT] {
            let a = normalize_on_device(&imgs, &norm, Device::Cpu).unwrap();
            let b = crate::data::images_to_tensor(&imgs, &norm, Device::Cpu).unwrap();
            assert_eq!(a.size(), vec![3, 3, 24, 24]);
            assert!(a.equal(&b), "{norm:?}");
            // NCHW by shape, channels-last in memory.
            assert_eq!(a.stride()[1], 1);
        }
        let mixed = vec![RgbImage::new(8, 8), RgbImage::new(9, 8)];
        assert!(matches!(
            normalize_on_device(&mixed, &Normalization::IMAGENET, Device::Cpu),
            Err(Error::InvalidInput { .. })
        ));
    }

    #[test]
    fn prefetch_defaults_keep_the_cpu_path_and_scale_with_cores_on_cuda() {
        assert_eq!(Prefetch::for_device(Device::Cpu, 64), Prefetch::SINGLE);
        let gpu = |cores| Prefetch::for_device(Device::Cuda(0), cores);
        assert_eq!(
            gpu(16),
            Prefetch {
                workers: 8,
                depth: 2
            }
        );
        assert_eq!(gpu(6).workers, 3);
        assert_eq!(gpu(1).workers, 1);
        assert_eq!(gpu(128).workers, 8);
        assert!(Prefetch {
            workers: 0,
            depth: 1
        }
        .check()
        .is_err());
        assert!(Prefetch {
            workers: 2,
            depth: 0
        }
        .check()
        .is_err());
        assert!(gpu(16).check().is_ok());
    }
}
