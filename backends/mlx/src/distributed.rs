//! One model over several processes with MLX distributed: the ring backend over TCP, set up by
//! MLX's own hostfile convention (a JSON list, one entry of `"ip:port"` addresses per rank).
//! Pipeline parallel: rank 0 runs the embedding, the first share of the layers and the output
//! head; rank `r` the `r`-th share of the layers. A forward pass sends the hidden states round
//! the ring, 0 -> 1 -> ... -> N-1 -> 0, so every rank talks only to its neighbours. The other
//! ranks mirror rank 0's KV caches from commands it sends ahead ([`Command`]).
//!
//! mlx-rs does not wrap MLX distributed; its mlx-c functions come from mlx-sys here.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use minerva_core::{Error, ModelPart, Result};
use mlx_rs::transforms::eval;
use mlx_rs::{Array, Dtype, Stream};

use crate::cache::KvCache;
use crate::error::MlxResultExt;
use crate::models::Transformer;
use crate::ENGINE_NAME;

/// This process's place in an MLX ring.
pub struct Ring {
    group: mlx_sys::mlx_distributed_group,
    rank: i32,
    /// The first address of every rank, from the hostfile.
    hosts: Vec<String>,
    hostfile: PathBuf,
    /// The connection from the previous rank, when this process can find it: waited on until
    /// data arrives before each receive, because MLX's ring polls a socket with a receive
    /// pending, keeping a core busy for as long as it waits.
    left_socket: Option<i32>,
}

// SAFETY: the group is an immutable handle that MLX shares between its own threads; this
// process uses it from the one thread that evaluates the model.
unsafe impl Send for Ring {}
// SAFETY: as above.
unsafe impl Sync for Ring {}

impl Ring {
    /// Join the ring of `hostfile` as `rank` (once per process: MLX keeps one global group),
    /// waiting for the neighbours to join: at most `patience`, or for ever.
    pub fn join(hostfile: &Path, rank: usize, patience: Option<Duration>) -> Result<&'static Ring> {
        static RING: OnceLock<Ring> = OnceLock::new();
        if let Some(ring) = RING.get() {
            if ring.hostfile != hostfile || ring.rank != rank as i32 {
                return Err(Error::Config(format!(
                    "this process is already rank {} of the MLX ring of {}; one ring per process",
                    ring.rank,
                    ring.hostfile.display()
                )));
            }
            return Ok(ring);
        }
        let hosts = read_hostfile(hostfile)?;
        if rank >= hosts.len() {
            return Err(Error::Config(format!(
                "rank {rank} is not in {}, which lists {} ranks",
                hostfile.display(),
                hosts.len()
            )));
        }
        let (status, group) = init(hostfile, rank, patience)?;
        if status != 0 || group.ctx.is_null() {
            return Err(Error::engine(
                ENGINE_NAME,
                format!(
                    "joining the MLX ring of {} as rank {rank} failed (are the other ranks \
                     started, and the addresses free?)",
                    hostfile.display()
                ),
            ));
        }
        // SAFETY: reads the group just made.
        let (size, joined) = unsafe {
            (
                mlx_sys::mlx_distributed_group_size(group),
                mlx_sys::mlx_distributed_group_rank(group),
            )
        };
        if size as usize != hosts.len() || joined != rank as i32 {
            return Err(Error::engine(
                ENGINE_NAME,
                format!(
                    "MLX joined as rank {joined} of {size}, not {rank} of {}",
                    hosts.len()
                ),
            ));
        }
        let left_socket = hosts[rank]
            .rsplit_once(':')
            .and_then(|(_, port)| port.parse().ok())
            .and_then(accepted_socket);
        let ring = Ring {
            group,
            rank: rank as i32,
            hosts,
            hostfile: hostfile.to_path_buf(),
            left_socket,
        };
        Ok(RING.get_or_init(|| ring))
    }

    fn size(&self) -> i32 {
        self.hosts.len() as i32
    }

    /// The rank data goes to.
    fn right(&self) -> i32 {
        (self.rank + 1) % self.size()
    }

    /// The rank data comes from.
    fn left(&self) -> i32 {
        (self.rank + self.size() - 1) % self.size()
    }

    /// The layers of `rank` out of `layers`: an equal share each, in rank order.
    fn stage_of(&self, rank: i32, layers: usize) -> Range<usize> {
        let (rank, size) = (rank as usize, self.hosts.len());
        rank * layers / size..(rank + 1) * layers / size
    }

    /// This rank's layers out of `layers`.
    pub fn stage(&self, layers: usize) -> Range<usize> {
        self.stage_of(self.rank, layers)
    }

    /// Where each share of `layers` runs; rank 0 (this machine's `device`) holds the output.
    pub fn placement(&self, layers: usize, device: &str) -> Vec<ModelPart> {
        (0..self.size())
            .map(|rank| {
                let stage = self.stage_of(rank, layers);
                ModelPart {
                    device: match rank {
                        0 => format!("{device} (rank 0)"),
                        _ => format!("rank {rank} [{}]", self.hosts[rank as usize]),
                    },
                    first_layer: stage.start as u32,
                    layers: stage.len() as u32,
                    output: rank == 0,
                }
            })
            .collect()
    }

    /// Send `x` to the next rank and wait until it is sent.
    fn send(&self, x: &Array) -> Result<()> {
        let stream = Stream::cpu();
        // SAFETY: mlx-c makes a new array handle for the send operation; `x` and the group
        // outlive the call.
        let sent = unsafe {
            let mut sent = mlx_sys::mlx_array_new();
            let status = mlx_sys::mlx_distributed_send(
                &mut sent,
                x.as_ptr(),
                self.right(),
                self.group,
                stream.as_ptr(),
            );
            let sent = Array::from_ptr(sent);
            if status != 0 {
                return Err(self.lost("sending to"));
            }
            sent
        };
        eval([&sent]).map_err(|e| self.lost_because("sending to", e))
    }

    /// Receive an array of `shape` and `dtype` from the previous rank.
    fn recv(&self, shape: &[i32], dtype: Dtype) -> Result<Array> {
        if let Some(fd) = self.left_socket {
            if !wait_readable(fd) {
                return Err(self.lost("receiving from"));
            }
        }
        let stream = Stream::cpu();
        // SAFETY: as in `send`; the shape slice outlives the call.
        let received = unsafe {
            let mut received = mlx_sys::mlx_array_new();
            let status = mlx_sys::mlx_distributed_recv(
                &mut received,
                shape.as_ptr(),
                shape.len(),
                dtype.into(),
                self.left(),
                self.group,
                stream.as_ptr(),
            );
            let received = Array::from_ptr(received);
            if status != 0 {
                return Err(self.lost("receiving from"));
            }
            received
        };
        eval([&received]).map_err(|e| self.lost_because("receiving from", e))?;
        Ok(received)
    }

    fn lost(&self, what: &str) -> Error {
        Error::engine(
            ENGINE_NAME,
            format!(
                "MLX ring rank {}: {what} a neighbour failed; is every rank of {} running?",
                self.rank,
                self.hostfile.display()
            ),
        )
    }

    fn lost_because(&self, what: &str, e: impl std::fmt::Display) -> Error {
        Error::engine(
            ENGINE_NAME,
            format!(
                "MLX ring rank {}: {what} a neighbour failed: {e}",
                self.rank
            ),
        )
    }
}

/// `mlx_distributed_init` with the ring backend as `rank` of `hostfile`, on a thread of its own
/// so that waiting for the other ranks can end after `patience` (the thread then stays blocked
/// until they come; a later join in this process is refused while it does). Without patience
/// it tries again until it joins: the last rank connects to rank 0 first and MLX gives that
/// about 15 s.
fn init(
    hostfile: &Path,
    rank: usize,
    patience: Option<Duration>,
) -> Result<(i32, mlx_sys::mlx_distributed_group)> {
    static WAITING: AtomicBool = AtomicBool::new(false);
    if WAITING.swap(true, Ordering::SeqCst) {
        return Err(Error::engine(
            ENGINE_NAME,
            "an earlier attempt to join an MLX ring is still waiting for its ranks",
        ));
    }
    // An mlx-rs operation installs mlx-rs's error handler; mlx-c's default one exits the
    // process on the first failed call.
    let _ = Array::from_int(0).add(Array::from_int(0));
    // MLX's ring backend reads its rank and hostfile from the environment.
    std::env::set_var("MLX_HOSTFILE", hostfile);
    std::env::set_var("MLX_RANK", rank.to_string());
    // SAFETY: availability is a query of the build.
    if !unsafe { mlx_sys::mlx_distributed_is_available(c"ring".as_ptr()) } {
        WAITING.store(false, Ordering::SeqCst);
        return Err(Error::engine(
            ENGINE_NAME,
            "this MLX build has no ring backend",
        ));
    }
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("mlx-ring-join".into())
        .spawn(move || {
            let (status, group) = loop {
                let mut group = mlx_sys::mlx_distributed_group {
                    ctx: std::ptr::null_mut(),
                };
                // SAFETY: mlx-c fills the group handle; the backend name is static.
                let status =
                    unsafe { mlx_sys::mlx_distributed_init(&mut group, true, c"ring".as_ptr()) };
                if status == 0 || patience.is_some() {
                    break (status, group);
                }
                std::thread::sleep(Duration::from_secs(1));
            };
            WAITING.store(false, Ordering::SeqCst);
            let _ = sender.send((status, SendGroup(group)));
        })
        .map_err(|e| Error::engine(ENGINE_NAME, format!("cannot start a thread: {e}")))?;
    let joined = match patience {
        Some(patience) => receiver.recv_timeout(patience).map_err(|_| {
            Error::engine(
                ENGINE_NAME,
                format!(
                    "the other ranks of the MLX ring of {} did not join within {} s; start \
                     `minerva worker --mlx --hostfile {} --rank R MODEL` for each of them",
                    hostfile.display(),
                    patience.as_secs(),
                    hostfile.display()
                ),
            )
        })?,
        None => receiver
            .recv()
            .map_err(|_| Error::engine(ENGINE_NAME, "joining the MLX ring failed"))?,
    };
    Ok((joined.0, joined.1 .0))
}

/// A group handle crossing from the joining thread.
struct SendGroup(mlx_sys::mlx_distributed_group);
// SAFETY: the handle is only moved to the thread that keeps it.
unsafe impl Send for SendGroup {}

/// The descriptor of this process's connected TCP socket whose local port is `port`: the
/// connection MLX accepted from the previous rank (it closes the listening socket after that).
fn accepted_socket(port: u16) -> Option<i32> {
    let mut found = None;
    for fd in 3..4096 {
        // SAFETY: getsockname/getpeername only write into the storage we pass, whatever `fd` is.
        let (local, connected) = unsafe {
            let mut address: libc::sockaddr_storage = std::mem::zeroed();
            let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            if libc::getsockname(
                fd,
                (&mut address as *mut libc::sockaddr_storage).cast(),
                &mut len,
            ) != 0
            {
                continue;
            }
            let local = match address.ss_family as i32 {
                libc::AF_INET => {
                    let v4 =
                        &*(&address as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>();
                    u16::from_be(v4.sin_port)
                }
                libc::AF_INET6 => {
                    let v6 =
                        &*(&address as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>();
                    u16::from_be(v6.sin6_port)
                }
                _ => continue,
            };
            let mut peer: libc::sockaddr_storage = std::mem::zeroed();
            let mut peer_len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            let connected = libc::getpeername(
                fd,
                (&mut peer as *mut libc::sockaddr_storage).cast(),
                &mut peer_len,
            ) == 0;
            (local, connected)
        };
        if local == port && connected {
            if found.is_some() {
                return None; // several connections on this port: wait on none of them
            }
            found = Some(fd);
        }
    }
    found
}

/// Block until `fd` has data to read; false when the peer closed the connection instead (MLX's
/// socket thread would keep retrying the receive).
fn wait_readable(fd: i32) -> bool {
    let mut poll = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: polls one descriptor described by memory we own.
    while unsafe { libc::poll(&mut poll, 1, -1) } < 0
        && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted
    {}
    let mut byte = 0u8;
    // SAFETY: peeks at most one byte into `byte`, leaving the data for MLX.
    let peeked = unsafe {
        libc::recv(
            fd,
            (&mut byte as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    peeked > 0
        || (peeked < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::WouldBlock)
}

/// The first address of each rank in an MLX ring hostfile.
fn read_hostfile(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Config(format!("cannot read the hostfile {}: {e}", path.display())))?;
    let ranks: Vec<Vec<String>> = serde_json::from_str(&text).map_err(|e| {
        Error::Config(format!(
            "{} is not an MLX ring hostfile (a JSON list of [\"ip:port\", ...] per rank): {e}",
            path.display()
        ))
    })?;
    if ranks.len() < 2 || ranks.iter().any(Vec::is_empty) {
        return Err(Error::Config(format!(
            "{} must list at least two ranks, each with an address",
            path.display()
        )));
    }
    Ok(ranks.into_iter().map(|r| r[0].clone()).collect())
}

/// What rank 0 tells the other ranks, each a fixed header of `HEADER` integers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Command {
    /// A forward pass of `rows` sequences of `len` positions, `width` wide; their sequence ids
    /// and the hidden states follow.
    Pass {
        rows: i32,
        len: i32,
        width: i32,
        dtype: Dtype,
    },
    /// Keep only a sequence's first `len` positions.
    Truncate { seq: i32, len: i32 },
    /// A sequence's cache becomes the first `len` positions of another's.
    CopyPrefix { from: i32, to: i32, len: i32 },
    /// The model is unloaded: stop serving.
    Stop,
}

const HEADER: i32 = 5;

impl Command {
    fn encode(self) -> Array {
        let words = match self {
            Command::Pass {
                rows,
                len,
                width,
                dtype,
            } => [1, rows, len, width, dtype_code(dtype)],
            Command::Truncate { seq, len } => [2, seq, len, 0, 0],
            Command::CopyPrefix { from, to, len } => [3, from, to, len, 0],
            Command::Stop => [4, 0, 0, 0, 0],
        };
        Array::from_slice(&words, &[HEADER])
    }

    fn decode(words: &[i32]) -> Result<Command> {
        let bad = || Error::engine(ENGINE_NAME, format!("unknown ring command {words:?}"));
        let &[kind, a, b, c, d] = words else {
            return Err(bad());
        };
        Ok(match kind {
            1 => Command::Pass {
                rows: a,
                len: b,
                width: c,
                dtype: dtype_of(d).ok_or_else(bad)?,
            },
            2 => Command::Truncate { seq: a, len: b },
            3 => Command::CopyPrefix {
                from: a,
                to: b,
                len: c,
            },
            4 => Command::Stop,
            _ => return Err(bad()),
        })
    }
}

fn dtype_code(dtype: Dtype) -> i32 {
    match dtype {
        Dtype::Float16 => 1,
        Dtype::Bfloat16 => 2,
        _ => 0,
    }
}

fn dtype_of(code: i32) -> Option<Dtype> {
    match code {
        0 => Some(Dtype::Float32),
        1 => Some(Dtype::Float16),
        2 => Some(Dtype::Bfloat16),
        _ => None,
    }
}

/// Why a split model can no longer serve: set by its [`Pipeline`] when the ring breaks.
pub type RingFailure = Arc<Mutex<Option<String>>>;

/// Rank 0's end of the pipeline: passes hidden states through the other ranks' layers and
/// tells them what happens to the KV caches.
pub struct Pipeline {
    ring: &'static Ring,
    failure: RingFailure,
}

impl Pipeline {
    /// The pipeline of `ring`, whose rank is 0.
    pub fn new(ring: &'static Ring) -> Self {
        Pipeline {
            ring,
            failure: RingFailure::default(),
        }
    }

    /// Where a broken ring is reported (the model's `failure`).
    pub fn failure(&self) -> RingFailure {
        Arc::clone(&self.failure)
    }

    /// `result`, remembering its error: a ring that failed once has lost a rank.
    fn watch<T>(&self, result: Result<T>) -> Result<T> {
        if let Err(e) = &result {
            let mut failure = self.failure.lock().unwrap_or_else(|e| e.into_inner());
            failure.get_or_insert_with(|| e.to_string());
        }
        result
    }

    /// `hidden` (`[rows, len, width]`, after this rank's layers, row `i` of sequence `seqs[i]`)
    /// through every other rank's layers.
    pub fn through_others(&self, hidden: &Array, seqs: &[usize]) -> Result<Array> {
        let shape = hidden.shape().to_vec();
        let hidden = match dtype_code(hidden.dtype()) {
            0 => hidden.as_dtype(Dtype::Float32).mlx()?,
            _ => hidden.clone(),
        };
        let (rows, len, width) = (shape[0], shape[1], shape[2]);
        let dtype = hidden.dtype();
        let ids: Vec<i32> = seqs.iter().map(|&s| s as i32).collect();
        let command = Command::Pass {
            rows,
            len,
            width,
            dtype,
        };
        self.watch((|| {
            self.ring.send(&command.encode())?;
            self.ring.send(&Array::from_slice(&ids, &[rows]))?;
            self.ring.send(&hidden)?;
            self.ring.recv(&shape, dtype)
        })())
    }

    /// Every other rank keeps only `seq`'s first `len` positions too.
    pub fn truncate(&self, seq: usize, len: usize) -> Result<()> {
        let command = Command::Truncate {
            seq: seq as i32,
            len: len as i32,
        };
        self.watch(self.ring.send(&command.encode()))
    }

    /// Every other rank copies the prefix too.
    pub fn copy_prefix(&self, from: usize, to: usize, len: usize) -> Result<()> {
        let command = Command::CopyPrefix {
            from: from as i32,
            to: to as i32,
            len: len as i32,
        };
        self.watch(self.ring.send(&command.encode()))
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        // The other ranks stop serving; a rank that is gone already changes nothing.
        let _ = self.ring.send(&Command::Stop.encode());
    }
}

/// Serve rank `ring.rank`'s layers of `model` until rank 0 stops or goes away: apply each
/// command, pass it on to the next rank (the last rank sends hidden states back to rank 0).
pub fn serve_stage(ring: &Ring, model: &Transformer) -> Result<()> {
    let last = ring.right() == 0;
    let mut caches: HashMap<i32, Vec<KvCache>> = HashMap::new();
    let fresh = || -> Vec<KvCache> { (0..model.layers()).map(|_| KvCache::default()).collect() };
    loop {
        let header = ring.recv(&[HEADER], Dtype::Int32)?;
        let command = Command::decode(header.as_slice::<i32>())?;
        if !last {
            ring.send(&header)?;
        }
        match command {
            Command::Pass {
                rows,
                len,
                width,
                dtype,
            } => {
                let ids = ring.recv(&[rows], Dtype::Int32)?;
                let seqs = ids.as_slice::<i32>().to_vec();
                let hidden = ring.recv(&[rows, len, width], dtype)?;
                if !last {
                    ring.send(&ids)?;
                }
                for &seq in &seqs {
                    caches.entry(seq).or_insert_with(fresh);
                }
                let mut picked: Vec<(i32, Vec<KvCache>)> = seqs
                    .iter()
                    .map(|s| (*s, caches.remove(s).unwrap_or_else(fresh)))
                    .collect();
                let mut refs: Vec<&mut Vec<KvCache>> = picked.iter_mut().map(|(_, c)| c).collect();
                let out = model
                    .layer_states(&hidden, &mut refs)?
                    .as_dtype(dtype)
                    .mlx()?;
                eval([&out]).mlx()?;
                eval(
                    picked
                        .iter()
                        .flat_map(|(_, c)| c.iter().flat_map(KvCache::arrays)),
                )
                .mlx()?;
                caches.extend(picked);
                ring.send(&out)?;
            }
            Command::Truncate { seq, len } => {
                for cache in caches.entry(seq).or_insert_with(fresh) {
                    cache.truncate(len);
                }
            }
            Command::CopyPrefix { from, to, len } => {
                let copy = caches
                    .get(&from)
                    .map(|c| c.iter().map(|c| c.prefix(len)).collect())
                    .unwrap_or_else(fresh);
                caches.insert(to, copy);
            }
            Command::Stop => return Ok(()),
        }
    }
}
