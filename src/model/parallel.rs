//! Data-parallel training steps on the CPU: two copies of the classifier (the second reads the
//! first's variables) each run half of a batch on one thread, with every BatchNorm normalising
//! by the whole batch's statistics (`csrc/syncbn.cpp`), and their gradients summed before the
//! one SGD update. The step is the whole-batch step of PAPER.md (BatchNorm over the batch of 32
//! images × 3 views, cross-entropy averaged over it) up to the order of float sums.
//!
//! Why: on the 2-core CPU of docs/results.md one thread runs a training step at a median 0.76
//! of two threads' speed ("Scoring streams"), so two one-thread halves do more per second than
//! one two-thread whole. `CUTPASTE_TRAIN_STREAMS=1` turns it off; it is used on the CPU with at
//! least 2 intra-op threads and 4 images a batch (docs/results.md, "Data-parallel training").
use super::threads::ThreadIntraOp;
use super::Classifier;
use crate::error::{Error, Result};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::ffi::{c_char, c_int, c_void, CStr};
use tch::{Device, Kind, Reduction, Tensor};
use torch_sys::C_tensor;

extern "C" {
    fn cutpaste_syncbn_group_new() -> *mut c_void;
    fn cutpaste_syncbn_group_free(g: *mut c_void);
    fn cutpaste_syncbn_group_abort(g: *mut c_void);
    fn cutpaste_syncbn_last_error() -> *const c_char;
    fn cutpaste_syncbn(
        x: *const C_tensor,
        gamma: *const C_tensor,
        beta: *const C_tensor,
        running_mean: *const C_tensor,
        running_var: *const C_tensor,
        momentum: f64,
        eps: f64,
        group: *mut c_void,
        rank: i64,
        out: *mut *mut C_tensor,
    ) -> c_int;
}

/// The meeting point of the two ranks' BatchNorms (a C++ object with its own lock).
struct Group(*mut c_void);

// SAFETY: the C++ group is used only through its mutex-guarded methods.
unsafe impl Send for Group {}
unsafe impl Sync for Group {}

impl Group {
    fn new() -> Self {
        // SAFETY: plain allocation, freed in Drop.
        Self(unsafe { cutpaste_syncbn_group_new() })
    }

    /// Wakes a rank waiting for a partner that failed; later exchanges fail.
    fn abort(&self) {
        // SAFETY: `self.0` is a live group.
        unsafe { cutpaste_syncbn_group_abort(self.0) }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        // SAFETY: allocated by `cutpaste_syncbn_group_new`, freed once.
        unsafe { cutpaste_syncbn_group_free(self.0) }
    }
}

thread_local! {
    /// This thread's group and rank while it runs a data-parallel half step.
    static RANK: Cell<Option<(usize, i64)>> = const { Cell::new(None) };
}

/// While alive, training-mode BatchNorms on this thread synchronise with the other rank.
struct RankScope;

impl RankScope {
    fn enter(group: &Group, rank: i64) -> Self {
        RANK.with(|r| r.set(Some((group.0 as usize, rank))));
        RankScope
    }
}

impl Drop for RankScope {
    fn drop(&mut self) {
        RANK.with(|r| r.set(None));
    }
}

/// A training-mode batch norm over both ranks' batches, when this thread is a rank; `None`
/// otherwise (the caller runs libtorch's).
pub(crate) fn sync_batch_norm(
    x: &Tensor,
    [gamma, beta, mean, var]: [&Tensor; 4],
    momentum: f64,
    eps: f64,
) -> Option<Result<Tensor>> {
    let (group, rank) = RANK.with(Cell::get)?;
    let mut out: *mut C_tensor = std::ptr::null_mut();
    // SAFETY: the tensors are live handles (`as_ptr` gives tch's `at::Tensor*`), `group` is the
    // live group of the running step, and a returned handle is owned by the new `Tensor`.
    let rc = unsafe {
        cutpaste_syncbn(
            x.as_ptr(),
            gamma.as_ptr(),
            beta.as_ptr(),
            mean.as_ptr(),
            var.as_ptr(),
            momentum,
            eps,
            group as *mut c_void,
            rank,
            &mut out,
        )
    };
    Some(match rc {
        0 if !out.is_null() => Ok(unsafe { Tensor::from_ptr(out) }),
        _ => Err(Error::internal(format!(
            "synchronised batch norm: {}",
            // SAFETY: a NUL-terminated thread-local string owned by the shim.
            unsafe { CStr::from_ptr(cutpaste_syncbn_last_error()) }.to_string_lossy()
        ))),
    })
}

/// Whether a step of `batch` images on `device` runs data-parallel; see the module docs.
pub(crate) fn wanted(device: Device, batch: i64) -> bool {
    let off = std::env::var("CUTPASTE_TRAIN_STREAMS").is_ok_and(|v| v.trim() == "1");
    device == Device::Cpu && batch >= 4 && tch::get_num_threads() >= 2 && !off
}

/// The second rank's classifier (reading the first's variables) and its parameters.
pub(crate) struct Replica {
    clf: Option<Classifier>,
}

impl Replica {
    /// A copy of `clf` on the same variables.
    pub(crate) fn of(clf: &Classifier) -> Result<Self> {
        Ok(Self {
            clf: Some(clf.share().build()?),
        })
    }

    /// One half step each on `clf` and the replica, the gradients summed into `clf`'s (which
    /// must be zero); returns (loss, accuracy) of the whole batch before the update.
    pub(crate) fn step(
        &mut self,
        clf: &Classifier,
        images: &Tensor,
        labels: &Tensor,
    ) -> Result<(f64, f64)> {
        let replica = self.clf.take().ok_or_else(|| {
            Error::internal("the data-parallel replica was lost by a failed step")
        })?;
        let n = images.size()[0];
        let half = n / 2;
        let (x0, x1) = (
            images.f_narrow(0, 0, half)?,
            images.f_narrow(0, half, n - half)?,
        );
        let (y0, y1) = (
            labels.f_narrow(0, 0, half)?,
            labels.f_narrow(0, half, n - half)?,
        );
        let threads = (tch::get_num_threads().max(2) / 2) as usize;
        let group = Group::new();
        let (r0, r1) = std::thread::scope(|s| {
            let group = &group;
            let other = s.spawn(move || {
                let out = rank_step(&replica, group, 1, threads, &x1, &y1, n);
                (replica, out)
            });
            let mine = rank_step(clf, group, 0, threads, &x0, &y0, n);
            match other.join() {
                Ok((replica, theirs)) => (mine, Ok((replica, theirs))),
                Err(panic) => (mine, Err(panic)),
            }
        });
        let (replica, r1) = match r1 {
            Ok(v) => v,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        let ((loss0, right0), (loss1, right1)) = (r0?, r1?);
        add_gradients(clf, &replica)?;
        self.clf = Some(replica);
        Ok((loss0 + loss1, (right0 + right1) / n as f64))
    }
}

/// One rank's half step: forward and backward of its half, the loss summed over it and divided
/// by the whole batch's size (so the ranks' gradients add up to the whole batch's); returns
/// (its share of the loss, its correct predictions). A failure aborts the group, so the other
/// rank does not wait for it.
fn rank_step(
    clf: &Classifier,
    group: &Group,
    rank: i64,
    threads: usize,
    x: &Tensor,
    y: &Tensor,
    n: i64,
) -> Result<(f64, f64)> {
    let run = || -> Result<(f64, f64)> {
        let _threads = ThreadIntraOp::set(threads);
        let _rank = RankScope::enter(group, rank);
        zero_gradients(clf)?;
        let out = clf.forward_t(x, true)?;
        let labels = y.f_to_device(clf.device())?;
        let loss = out
            .logits
            .f_log_softmax(-1, Kind::Float)?
            .f_nll_loss(&labels, None::<Tensor>, Reduction::Sum, -100)?
            .f_div_scalar(n as f64)?;
        loss.f_backward()?;
        let right = out.logits.f_argmax(-1, false)?.f_eq_tensor(&labels)?;
        let right = right.f_to_kind(Kind::Double)?.f_sum(Kind::Double)?;
        Ok((loss.f_double_value(&[])?, right.f_double_value(&[])?))
    };
    let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(run));
    if !matches!(out, Ok(Ok(_))) {
        group.abort();
    }
    match out {
        Ok(r) => r,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Zeroes the gradients `clf`'s parameters have.
fn zero_gradients(clf: &Classifier) -> Result<()> {
    for p in clf.named_parameters().values() {
        let mut g = p.f_grad()?;
        if g.defined() {
            let _ = g.f_detach_()?.f_zero_()?;
        }
    }
    Ok(())
}

/// `clf`'s gradients += the replica's, parameter by parameter.
fn add_gradients(clf: &Classifier, replica: &Classifier) -> Result<()> {
    let theirs: BTreeMap<String, Tensor> = replica.named_parameters();
    tch::no_grad(|| -> Result<()> {
        for (name, p) in clf.named_parameters() {
            let (mut g, other) = (p.f_grad()?, theirs.get(&name).map(|t| t.f_grad()));
            let Some(other) = other.transpose()? else {
                return Err(Error::internal(format!("replica without parameter {name}")));
            };
            if g.defined() && other.defined() {
                let _ = g.f_add_(&other)?;
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ClassifierConfig, FastPath};

    fn config(fast_path: FastPath) -> ClassifierConfig {
        ClassifierConfig {
            fast_path,
            ..ClassifierConfig::new(3, Device::Cpu)
        }
    }

    /// Loss, accuracy, gradients and BatchNorm running statistics after one whole-batch
    /// forward and backward on one thread.
    fn whole(clf: &Classifier, x: &Tensor, y: &Tensor) -> (f64, f64) {
        let out = clf.forward_t(x, true).unwrap();
        let loss = out
            .logits
            .log_softmax(-1, Kind::Float)
            .f_nll_loss(y, None::<Tensor>, Reduction::Mean, -100)
            .unwrap();
        loss.backward();
        let right = out
            .logits
            .argmax(-1, false)
            .eq_tensor(y)
            .to_kind(Kind::Double);
        (
            loss.double_value(&[]),
            right.mean(Kind::Double).double_value(&[]),
        )
    }

    fn rel_diff(a: &Tensor, b: &Tensor) -> f64 {
        let (a, b) = (a.to_kind(Kind::Double), b.to_kind(Kind::Double));
        (&a - &b).norm().double_value(&[]) / (b.norm().double_value(&[]) + 1e-12)
    }

    #[test]
    fn a_data_parallel_step_is_the_whole_batch_step() {
        if tch::get_num_threads() < 2 {
            eprintln!("skipped: one intra-op thread");
            return;
        }
        for fast_path in [
            FastPath::FP32,
            FastPath {
                channels_last: true,
                ..FastPath::FP32
            },
        ] {
            let cfg = config(fast_path);
            let (a, b) = (
                Classifier::new(&cfg, Device::Cpu, 3).unwrap(),
                Classifier::new(&cfg, Device::Cpu, 3).unwrap(),
            );
            tch::manual_seed(5);
            // 11 images: the halves are 5 and 6
            let x = Tensor::randn([11, 3, 32, 32], (Kind::Float, Device::Cpu));
            let y = Tensor::from_slice(&[0i64, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1]);
            let (loss_a, acc_a) = whole(&a, &x, &y);
            let (loss_b, acc_b) = Replica::of(&b).unwrap().step(&b, &x, &y).unwrap();
            assert!(
                (loss_a - loss_b).abs() < 1e-5 * loss_a.abs(),
                "{loss_a} vs {loss_b}"
            );
            assert_eq!(acc_a, acc_b);
            let (pa, pb) = (a.named_parameters(), b.named_parameters());
            for (name, p) in &pa {
                let d = rel_diff(&pb[name].grad(), &p.grad());
                assert!(
                    d < 1e-4,
                    "{fast_path:?} gradient of {name}: relative difference {d}"
                );
            }
            let (va, vb) = (a.named_variables(), b.named_variables());
            for name in va.keys().filter(|k| k.contains("running_")) {
                let d = rel_diff(&vb[name], &va[name]);
                assert!(d < 1e-5, "{fast_path:?} {name}: relative difference {d}");
            }
        }
    }

    #[test]
    fn a_rank_whose_partner_failed_gets_an_error_not_a_hang() {
        let group = Group::new();
        let bn =
            super::super::layers::BatchNorm::new(&tch::nn::VarStore::new(Device::Cpu).root(), 4)
                .unwrap();
        let x = Tensor::randn([6, 4, 3, 3], (Kind::Float, Device::Cpu));
        std::thread::scope(|s| {
            let (group, x) = (&group, x.shallow_clone());
            let waiting = s.spawn(move || {
                let _rank = RankScope::enter(group, 1);
                bn.forward_t(&x, true).map(|_| ())
            });
            std::thread::sleep(std::time::Duration::from_millis(50));
            group.abort();
            let err = waiting.join().unwrap().unwrap_err();
            assert!(
                err.to_string().contains("other training stream failed"),
                "{err}"
            );
        });
        // outside a rank, training-mode batch norm is libtorch's
        assert!(sync_batch_norm(&x, [&x, &x, &x, &x], 0.1, 1e-5).is_none());
    }
}
