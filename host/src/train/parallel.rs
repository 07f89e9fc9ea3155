//! Data-parallel training: `R` ranks, each holding a replica of the model on its own device,
//! split every step's batch between them and sum their gradients.
//!
//! Every rank draws the same global batch (the batch of a step is a function of the seed and
//! the step, [`Trainer::batch`]) and trains on its shard, the samples
//! `[r n / R, (r + 1) n / R)` ([`Batch::shard`]). The ranks then sum their shard losses and
//! gradients with a [`Collective`] and divide by `R`: the mean of equal shards' mean losses is
//! the global batch's mean loss, so every rank holds the gradient a single device computes on
//! the whole batch (up to float rounding), and every rank applies the same clipping, AdamW
//! update and EMA to the same weights. The collective returns the same bytes on every rank,
//! so the replicas stay bit-identical.
//!
//! Nothing of a run depends on its rank count: rank 0 writes the checkpoints (the others
//! write nothing), and a run resumes with any rank count that divides its batch size.
//!
//! Two collectives: [`ThreadCollective`] sums through host memory between threads of one
//! process (CPU ranks, and GPUs in a build without NCCL), and, with the `nccl` feature,
//! [`NcclCollective`] all-reduces on the GPUs over NCCL (one rank per GPU, one thread per
//! rank).

use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use candle_core::{DType, Device, Tensor};

use super::batch::Batch;
use super::trainer::Trainer;
use crate::{Error, Result};

/// Sums a tensor over the ranks of a data-parallel run.
pub trait Collective: std::fmt::Debug {
    /// This rank, `0..ranks()`.
    fn rank(&self) -> usize;

    /// The number of ranks.
    fn ranks(&self) -> usize;

    /// The element-wise sum of `values` (a 1-D `f32` tensor on this rank's device) over all
    /// ranks, on this rank's device. Every rank calls it in the same order with tensors of
    /// the same length, and every rank gets the same bytes back.
    ///
    /// # Errors
    /// [`Error::Invalid`] when the ranks disagree on the length or a rank has stopped.
    fn sum(&mut self, values: &Tensor) -> Result<Tensor>;
}

impl Batch {
    /// Rank `rank`'s share of the batch when `ranks` ranks split it: the samples
    /// `[rank n / ranks, (rank + 1) n / ranks)`.
    ///
    /// # Errors
    /// [`Error::Invalid`] unless `ranks` divides the batch size and `rank < ranks`.
    pub fn shard(&self, rank: usize, ranks: usize) -> Result<Batch> {
        if ranks == 0 || rank >= ranks || !self.n.is_multiple_of(ranks) {
            return Err(Error::Invalid(format!(
                "a batch of {} samples cannot be split into {ranks} equal shards (rank {rank})",
                self.n
            )));
        }
        let n = self.n / ranks;
        let len = self.x_t.len() / self.n.max(1);
        let rows = rank * n..(rank + 1) * n;
        let elements = rows.start * len..rows.end * len;
        Ok(Batch {
            n,
            x_t: self.x_t[elements.clone()].to_vec(),
            t: self.t[rows.clone()].to_vec(),
            target: self.target[elements].to_vec(),
            weight: self.weight[rows.clone()].to_vec(),
            class: self.class.as_ref().map(|class| class[rows].to_vec()),
        })
    }
}

/// Sums over ranks that are threads of one process, through host memory: each rank copies
/// its values to the host, and every rank adds all ranks' copies in rank order (so every rank
/// computes the same bytes) and copies the sum to its device.
///
/// A rank whose collective is dropped (its thread ended, by an error or otherwise) makes the
/// other ranks' [`Collective::sum`] fail instead of waiting for it forever.
#[derive(Debug)]
pub struct ThreadCollective {
    rank: usize,
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    ranks: usize,
    state: Mutex<Exchange>,
    changed: Condvar,
}

#[derive(Debug)]
struct Exchange {
    /// Each rank's values of the current round.
    slots: Vec<Option<Vec<f32>>>,
    /// Ranks that have read the current round's sum.
    read: usize,
    /// Completed rounds.
    round: u64,
    /// A rank has gone.
    closed: bool,
}

impl ThreadCollective {
    /// The collectives of `ranks` ranks, one per thread, in rank order.
    ///
    /// # Errors
    /// [`Error::Invalid`] for zero ranks.
    pub fn group(ranks: usize) -> Result<Vec<ThreadCollective>> {
        if ranks == 0 {
            return Err(Error::Invalid("data-parallel training needs a rank".into()));
        }
        let shared = Arc::new(Shared {
            ranks,
            state: Mutex::new(Exchange {
                slots: vec![None; ranks],
                read: 0,
                round: 0,
                closed: false,
            }),
            changed: Condvar::new(),
        });
        Ok((0..ranks)
            .map(|rank| ThreadCollective {
                rank,
                shared: shared.clone(),
            })
            .collect())
    }
}

impl Collective for ThreadCollective {
    fn rank(&self) -> usize {
        self.rank
    }

    fn ranks(&self) -> usize {
        self.shared.ranks
    }

    fn sum(&mut self, values: &Tensor) -> Result<Tensor> {
        let host: Vec<f32> = values.to_dtype(DType::F32)?.to_vec1()?;
        let len = host.len();
        let gone = || Error::Invalid("a rank of the data-parallel run has stopped".into());
        let shared = &*self.shared;
        // A rank returns only once every rank has read the round (below), so its slot is
        // empty whenever it enters.
        let mut state = shared.state.lock().map_err(|_| gone())?;
        if state.closed {
            return Err(gone());
        }
        let round = state.round;
        state.slots[self.rank] = Some(host);
        shared.changed.notify_all();
        while state.slots.iter().any(Option::is_none) && !state.closed {
            state = shared.changed.wait(state).map_err(|_| gone())?;
        }
        if state.closed {
            return Err(gone());
        }
        let mut total = vec![0.0f32; len];
        for slot in state.slots.iter().flatten() {
            if slot.len() != len {
                return Err(Error::Invalid(format!(
                    "the ranks sum {len} and {} values",
                    slot.len()
                )));
            }
            for (sum, &value) in total.iter_mut().zip(slot) {
                *sum += value;
            }
        }
        state.read += 1;
        if state.read == shared.ranks {
            state.read = 0;
            state.round += 1;
            state.slots.iter_mut().for_each(|slot| *slot = None);
            shared.changed.notify_all();
        } else {
            // Hold this round's values until every rank has read them.
            while state.round == round && !state.closed {
                state = shared.changed.wait(state).map_err(|_| gone())?;
            }
        }
        drop(state);
        Ok(Tensor::from_vec(total, len, values.device())?)
    }
}

impl Drop for ThreadCollective {
    fn drop(&mut self) {
        if let Ok(mut state) = self.shared.state.lock() {
            state.closed = true;
        }
        self.shared.changed.notify_all();
    }
}

/// Checks that `ranks` ranks can split batches of `batch` samples into equal shards.
///
/// # Errors
/// [`Error::Invalid`] unless `ranks` is positive and divides `batch`.
pub(crate) fn check_ranks(batch: usize, ranks: usize) -> Result<()> {
    if ranks == 0 || !batch.is_multiple_of(ranks) {
        return Err(Error::Invalid(format!(
            "data-parallel training over {ranks} ranks needs a batch size divisible by \
             {ranks}, not {batch}"
        )));
    }
    Ok(())
}

/// Which collective a data-parallel run uses on its devices: NCCL on GPUs in a build with the
/// `nccl` feature, else [`ThreadCollective`].
pub fn collective_name(device: &Device) -> &'static str {
    if device.is_cuda() && cfg!(feature = "nccl") {
        "NCCL"
    } else {
        "host memory between threads"
    }
}

/// The ranks after the first of a data-parallel run, each stepping on a thread of its own.
#[derive(Debug)]
pub struct Followers {
    handles: Vec<JoinHandle<Result<()>>>,
}

impl Followers {
    /// Waits for every rank to finish.
    ///
    /// # Errors
    /// The first rank's error, if any rank failed.
    pub fn join(self) -> Result<()> {
        let mut first = Ok(());
        for handle in self.handles {
            let result = handle
                .join()
                .unwrap_or_else(|_| Err(Error::Invalid("a rank's thread panicked".into())));
            if first.is_ok() {
                first = result;
            }
        }
        first
    }
}

/// Makes `lead` (rank 0, on `devices[0]`) the first of `devices.len()` ranks: starts the
/// others on threads of their own, each with a copy of `lead`'s whole state on its device,
/// and returns `lead` joined to them. The caller steps rank 0 (with checkpoints, previews and
/// the progress bar, [`super::run`]) and then joins the followers; each follower steps until
/// the run is finished, `stop_after` steps are taken, or a step is not applied (a NaN or
/// infinite loss or gradient, which every rank sees alike). If rank 0 stops early, its
/// collective is dropped and the followers' next sum fails (with NCCL they wait: end the
/// process).
///
/// # Errors
/// [`Error::Invalid`] for no devices, a batch size that the rank count does not divide, or a
/// collective that cannot start.
pub fn data_parallel(
    lead: Trainer,
    devices: &[Device],
    stop_after: Option<u64>,
) -> Result<(Trainer, Followers)> {
    let ranks = devices.len();
    check_ranks(lead.config().train.batch_size, ranks)?;
    let state = lead.checkpoint()?;
    let data = lead.data().clone();
    let nccl = devices[0].is_cuda() && cfg!(feature = "nccl");
    let mut threads = if nccl {
        Vec::new()
    } else {
        ThreadCollective::group(ranks)?
    };
    let mut lead_collective = (!nccl).then(|| threads.remove(0));
    let mut threads = threads.into_iter();
    #[cfg(feature = "nccl")]
    let id = if nccl { Some(NcclId::new()?) } else { None };
    let mut handles = Vec::new();
    for (rank, device) in devices.iter().enumerate().skip(1) {
        let (state, data, device) = (state.clone(), data.clone(), device.clone());
        let thread = threads.next();
        #[cfg(feature = "nccl")]
        let id = id;
        handles.push(std::thread::spawn(move || -> Result<()> {
            let collective: Box<dyn Collective> = match thread {
                Some(thread) => Box::new(thread),
                #[cfg(feature = "nccl")]
                None => Box::new(NcclCollective::new(
                    &device,
                    rank,
                    ranks,
                    id.expect("an NCCL id"),
                )?),
                #[cfg(not(feature = "nccl"))]
                None => unreachable!("without NCCL every rank has a thread collective"),
            };
            let mut trainer =
                Trainer::from_checkpoint(state, data, &device)?.with_collective(collective)?;
            debug_assert_eq!(trainer.rank(), (rank, ranks));
            while !trainer.is_finished()
                && stop_after.is_none_or(|stop| trainer.step_count() < stop)
            {
                if !trainer.step()?.applied {
                    break;
                }
            }
            Ok(())
        }));
    }
    let collective: Box<dyn Collective> = match lead_collective.take() {
        Some(thread) => Box::new(thread),
        #[cfg(feature = "nccl")]
        None => Box::new(NcclCollective::new(
            &devices[0],
            0,
            ranks,
            id.expect("an NCCL id"),
        )?),
        #[cfg(not(feature = "nccl"))]
        None => unreachable!("without NCCL every rank has a thread collective"),
    };
    let lead = if lead.device().same_device(&devices[0]) {
        lead
    } else {
        Trainer::from_checkpoint(state, data, &devices[0])?
    };
    Ok((lead.with_collective(collective)?, Followers { handles }))
}

#[cfg(feature = "nccl")]
pub use nccl::{NcclCollective, NcclId};

#[cfg(feature = "nccl")]
mod nccl {
    use std::sync::Arc;

    use candle_core::backend::BackendStorage;
    use candle_core::cuda_backend::cudarc::nccl::safe::{Comm, Id, ReduceOp};
    use candle_core::{CpuStorage, CudaStorage, CustomOp1, Device, Layout, Shape, Tensor};

    use super::Collective;
    use crate::{Error, Result};

    /// The identity of one NCCL clique: made once, handed to every rank.
    #[derive(Debug, Clone, Copy)]
    pub struct NcclId(Id);

    impl NcclId {
        /// A new clique.
        ///
        /// # Errors
        /// [`Error::Invalid`] when NCCL cannot start.
        pub fn new() -> Result<Self> {
            Id::new()
                .map(NcclId)
                .map_err(|error| Error::Invalid(format!("NCCL: {error:?}")))
        }
    }

    /// Sums over GPU ranks with NCCL's all-reduce, on the stream of the rank's candle device
    /// (one rank per GPU and thread; NCCL's ring sums in the same order on every rank).
    pub struct NcclCollective {
        comm: Arc<Comm>,
    }

    impl std::fmt::Debug for NcclCollective {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("NcclCollective")
                .field("rank", &self.comm.rank())
                .field("ranks", &self.comm.world_size())
                .finish()
        }
    }

    impl NcclCollective {
        /// Joins the clique `id` as `rank` of `ranks` on `device` (a CUDA device). Blocks until
        /// every rank has joined.
        ///
        /// # Errors
        /// [`Error::Invalid`] for a CPU device or when NCCL fails.
        pub fn new(device: &Device, rank: usize, ranks: usize, id: NcclId) -> Result<Self> {
            let Device::Cuda(cuda) = device else {
                return Err(Error::Invalid("NCCL needs CUDA devices".into()));
            };
            let stream = cuda.cuda_stream();
            stream
                .context()
                .bind_to_thread()
                .map_err(|error| Error::Invalid(format!("CUDA: {error:?}")))?;
            let comm = Comm::from_rank(stream, rank, ranks, id.0)
                .map_err(|error| Error::Invalid(format!("NCCL: {error:?}")))?;
            Ok(NcclCollective {
                comm: Arc::new(comm),
            })
        }
    }

    impl Collective for NcclCollective {
        fn rank(&self) -> usize {
            self.comm.rank()
        }

        fn ranks(&self) -> usize {
            self.comm.world_size()
        }

        fn sum(&mut self, values: &Tensor) -> Result<Tensor> {
            let values = values.to_dtype(candle_core::DType::F32)?.contiguous()?;
            Ok(values.apply_op1_no_bwd(&AllReduce {
                comm: self.comm.clone(),
            })?)
        }
    }

    struct AllReduce {
        comm: Arc<Comm>,
    }

    impl CustomOp1 for AllReduce {
        fn name(&self) -> &'static str {
            "ddm-nccl-all-reduce"
        }

        fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
            candle_core::bail!("NCCL sums GPU tensors only")
        }

        fn cuda_fwd(
            &self,
            storage: &CudaStorage,
            layout: &Layout,
        ) -> candle_core::Result<(CudaStorage, Shape)> {
            let Some((start, end)) = layout.contiguous_offsets() else {
                candle_core::bail!("NCCL sums contiguous tensors only")
            };
            let source = storage.as_cuda_slice::<f32>()?.slice(start..end);
            let device = storage.device().clone();
            // SAFETY: every element is written by the all-reduce before it is read.
            let mut sum = unsafe { device.alloc::<f32>(end - start) }?;
            self.comm
                .all_reduce(&source, &mut sum, &ReduceOp::Sum)
                .map_err(|error| candle_core::Error::Msg(format!("NCCL: {error:?}")))?;
            Ok((
                CudaStorage::wrap_cuda_slice(sum, device),
                layout.shape().clone(),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_sum_in_rank_order_and_agree_bit_for_bit() {
        let ranks = 4;
        let collectives = ThreadCollective::group(ranks).unwrap();
        let handles: Vec<_> = collectives
            .into_iter()
            .map(|mut collective| {
                std::thread::spawn(move || {
                    let rank = collective.rank() as f32;
                    (0..3)
                        .map(|round| {
                            let values = Tensor::new(
                                &[rank + round as f32, 0.1 * (rank + 1.0), 1e8, -1e8 + rank],
                                &Device::Cpu,
                            )
                            .unwrap();
                            collective.sum(&values).unwrap().to_vec1::<f32>().unwrap()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let results: Vec<Vec<Vec<f32>>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        for rounds in &results {
            assert_eq!(rounds, &results[0], "every rank gets the same bytes");
        }
        for (round, sum) in results[0].iter().enumerate() {
            // 0 + 1 + 2 + 3 plus the round on every rank.
            assert_eq!(sum[0], 6.0 + 4.0 * round as f32);
            let expected = [0.1f32, 0.2, 0.3, 0.4].iter().fold(0.0f32, |a, &b| a + b);
            assert_eq!(sum[1], expected, "added in rank order");
        }
    }

    #[test]
    fn a_rank_that_stops_fails_the_others_instead_of_hanging() {
        let mut collectives = ThreadCollective::group(2).unwrap();
        let gone = collectives.pop().unwrap();
        let mut waiting = collectives.pop().unwrap();
        let handle =
            std::thread::spawn(move || waiting.sum(&Tensor::new(&[1.0f32], &Device::Cpu).unwrap()));
        std::thread::sleep(std::time::Duration::from_millis(50));
        drop(gone);
        let error = handle.join().unwrap().unwrap_err();
        assert!(error.to_string().contains("has stopped"), "{error}");
        assert!(ThreadCollective::group(0).is_err());
    }

    #[test]
    fn shards_split_the_batch_in_order() {
        let batch = Batch {
            n: 4,
            x_t: (0..8).map(|v| v as f32).collect(),
            t: vec![10.0, 11.0, 12.0, 13.0],
            target: (0..8).map(|v| -v as f32).collect(),
            weight: vec![1.0, 2.0, 3.0, 4.0],
            class: Some(vec![5, 6, 7, 8]),
        };
        let second = batch.shard(1, 2).unwrap();
        assert_eq!(second.n, 2);
        assert_eq!(second.x_t, [4.0, 5.0, 6.0, 7.0]);
        assert_eq!(second.t, [12.0, 13.0]);
        assert_eq!(second.target, [-4.0, -5.0, -6.0, -7.0]);
        assert_eq!(second.weight, [3.0, 4.0]);
        assert_eq!(second.class, Some(vec![7, 8]));
        assert_eq!(batch.shard(0, 1).unwrap(), batch);
        for (rank, ranks) in [(0, 3), (2, 2), (0, 0)] {
            assert!(batch.shard(rank, ranks).is_err(), "{rank} of {ranks}");
        }
    }
}
