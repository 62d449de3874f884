//! Models from the Hugging Face hub (or any server with its routes, at `HF_ENDPOINT`) into the
//! standard Hugging Face cache, the layout the `hf` CLI writes and reads: blobs named by their
//! hash, a snapshot of links per commit, `refs/<revision>`, partial downloads as
//! `blobs/<hash>.incomplete` (resumed from where they stopped, by this and by the `hf` CLI).
//! hf-hub gives the cache, the repo addressing, the token and the HTTP client; each file streams
//! over one connection into a writer thread that hashes it as it lands, so that the check against
//! the hub's hash (LFS sha256, else the git blob id) costs no extra pass. A file that does not
//! match is removed.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use hf_hub::api::tokio::{Api, ApiBuilder, ApiRepo};
use hf_hub::{Repo, RepoType};
use serde::Deserialize;
use sha2::Digest;

use crate::error::{Error, Result};
use crate::resolve::{hf_cache, parse_repo_reference, quant_of, resolve_model_path};

/// The quantization picked in a GGUF repo with several when none is named (as Ollama and
/// llama.cpp's `-hf` do).
const DEFAULT_QUANT: &str = "Q4_K_M";

/// Bytes handed to the writer thread at once.
const BATCH_BYTES: usize = 1 << 20;

/// Files of a model directory that are never fetched: other frameworks' weights and exports.
const SKIPPED_EXTENSIONS: &[&str] = &[
    "bin",
    "pt",
    "pth",
    "ckpt",
    "h5",
    "msgpack",
    "onnx",
    "onnx_data",
    "ot",
    "tflite",
    "gguf",
    "mlmodel",
    "pb",
];
const SKIPPED_FOLDERS: &[&str] = &["original/", "onnx/", "openvino/", "coreml/"];

/// What a pull reports while it runs (the CLI draws progress bars, the server logs).
pub trait PullProgress: Send + Sync {
    /// The files this pull fetches (name, size in bytes); files already cached are left out.
    fn planned(&self, files: &[(String, u64)]);
    /// `file` (of `size` bytes) starts; a resumed file then advances by what it already had.
    fn file_started(&self, file: &str, size: u64);
    /// `bytes` more of `file` arrived.
    fn advanced(&self, file: &str, bytes: u64);
    /// `file` is complete and checked.
    fn file_finished(&self, file: &str);
}

/// What a pull did.
#[derive(Debug, Clone)]
pub struct Pulled {
    /// The model's local path: the GGUF file (the first part of a split one) or the snapshot
    /// directory.
    pub path: PathBuf,
    /// Files fetched now.
    pub downloaded: Vec<String>,
    /// Files that were already in the cache.
    pub cached: Vec<String>,
    /// Bytes fetched now.
    pub bytes: u64,
}

/// The repo listing (`/api/models/{repo}/revision/{revision}?blobs=true`).
#[derive(Debug, Deserialize)]
struct Listing {
    sha: String,
    siblings: Vec<Sibling>,
}

#[derive(Debug, Clone, Deserialize)]
struct Sibling {
    rfilename: String,
    size: Option<u64>,
    /// The git blob id (sha1), the blob's name for files not in LFS.
    #[serde(rename = "blobId")]
    blob_id: Option<String>,
    lfs: Option<LfsInfo>,
}

#[derive(Debug, Clone, Deserialize)]
struct LfsInfo {
    sha256: String,
}

/// Fetch `reference` (`org/name`, or `org/name:QUANT` for one quantization of a GGUF repo) at
/// `revision` (default `main`) into the Hugging Face cache; files already there are kept.
pub async fn pull(
    reference: &str,
    revision: Option<&str>,
    progress: Arc<dyn PullProgress>,
) -> Result<Pulled> {
    let (repo_id, quant) = parse_repo_reference(reference).ok_or_else(|| {
        Error::ModelNotFound(format!(
            "{reference}: not a Hugging Face repo id (`org/name` or `org/name:QUANT`)"
        ))
    })?;
    let revision = revision.unwrap_or("main");
    let cache = hf_cache()?;
    let endpoint =
        std::env::var("HF_ENDPOINT").unwrap_or_else(|_| "https://huggingface.co".to_string());
    let token = std::env::var("HF_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
        .or_else(|| cache.token());
    let api = ApiBuilder::from_cache(cache.clone())
        .with_endpoint(endpoint.trim_end_matches('/').to_string())
        .with_token(token)
        .with_progress(false)
        .build()
        .map_err(|e| Error::Download {
            file: repo_id.to_string(),
            message: e.to_string(),
        })?;
    let repo = Repo::with_revision(repo_id.to_string(), RepoType::Model, revision.to_string());
    let remote = api.repo(repo.clone());
    let listing = list(&remote, repo_id, revision).await?;
    let wanted = select_files(&listing.siblings, quant, repo_id)?;

    let repo_dir = cache.path().join(repo.folder_name());
    let snapshot = repo_dir.join("snapshots").join(&listing.sha);
    let (cached, missing): (Vec<&Sibling>, Vec<&Sibling>) = wanted
        .iter()
        .partition(|s| is_cached(&snapshot.join(&s.rfilename), s.size));
    progress.planned(
        &missing
            .iter()
            .map(|s| (s.rfilename.clone(), s.size.unwrap_or(0)))
            .collect::<Vec<_>>(),
    );
    let mut bytes = 0;
    for sibling in &missing {
        let url = format!(
            "{}/{}/resolve/{}/{}",
            endpoint.trim_end_matches('/'),
            repo.url(),
            listing.sha,
            sibling.rfilename
        );
        let fetch = FileFetch {
            api: &api,
            url,
            repo_dir: &repo_dir,
            commit: &listing.sha,
            sibling,
            label: format!("{repo_id}/{}", sibling.rfilename),
        };
        bytes += fetch.run(progress.as_ref()).await?;
        progress.file_finished(&sibling.rfilename);
    }
    write_ref(&repo_dir, revision, &listing.sha)?;
    let first_gguf = wanted
        .iter()
        .find(|s| s.rfilename.ends_with(".gguf"))
        .map(|s| s.rfilename.as_str());
    let path = resolve_model_path(
        &format!(
            "{repo_id}{}",
            quant.map(|q| format!(":{q}")).unwrap_or_default()
        ),
        first_gguf,
        Some(revision),
    )?;
    Ok(Pulled {
        path,
        downloaded: missing.iter().map(|s| s.rfilename.clone()).collect(),
        cached: cached.iter().map(|s| s.rfilename.clone()).collect(),
        bytes,
    })
}

/// The repo's files with sizes and LFS hashes at `revision`.
async fn list(remote: &ApiRepo, repo_id: &str, revision: &str) -> Result<Listing> {
    let response = remote
        .info_request()
        .query(&[("blobs", "true")])
        .send()
        .await
        .map_err(|e| Error::Download {
            file: repo_id.to_string(),
            message: e.to_string(),
        })?;
    let status = response.status();
    if status.as_u16() == 404 {
        return Err(Error::ModelNotFound(format!(
            "{repo_id}: no such repo or revision `{revision}` on the hub"
        )));
    }
    if !status.is_success() {
        let message = match status.as_u16() {
            401 | 403 => "access denied: the repo is gated or private; set HF_TOKEN".to_string(),
            code => format!("the hub answered HTTP {code}"),
        };
        return Err(Error::Download {
            file: repo_id.to_string(),
            message,
        });
    }
    let body = response.bytes().await.map_err(|e| Error::Download {
        file: repo_id.to_string(),
        message: e.to_string(),
    })?;
    serde_json::from_slice(&body).map_err(|e| Error::Download {
        file: repo_id.to_string(),
        message: format!("unexpected repo listing: {e}"),
    })
}

/// The files to fetch: with a quantization, its GGUF file(s) (all parts of a split one); without,
/// the model directory when the repo has safetensors weights, else the one GGUF quantization
/// (or [`DEFAULT_QUANT`] among several).
fn select_files(siblings: &[Sibling], quant: Option<&str>, repo_id: &str) -> Result<Vec<Sibling>> {
    let ggufs: Vec<&Sibling> = siblings
        .iter()
        .filter(|s| s.rfilename.ends_with(".gguf") && !s.rfilename.contains("mmproj"))
        .collect();
    let mut quants: Vec<String> = ggufs
        .iter()
        .filter_map(|s| quant_of(&s.rfilename))
        .collect();
    quants.sort();
    quants.dedup();
    let of_quant = |q: &str| -> Vec<Sibling> {
        let mut files: Vec<Sibling> = ggufs
            .iter()
            .filter(|s| quant_of(&s.rfilename).is_some_and(|f| f.eq_ignore_ascii_case(q)))
            .map(|s| (*s).clone())
            .collect();
        files.sort_by(|a, b| a.rfilename.cmp(&b.rfilename));
        files
    };
    let listed = quants
        .iter()
        .map(|q| format!("{repo_id}:{q}"))
        .collect::<Vec<_>>()
        .join(", ");
    let available = || {
        if quants.is_empty() {
            "it has no GGUF files".to_string()
        } else {
            format!("available: {listed}")
        }
    };
    if let Some(q) = quant {
        let files = of_quant(q);
        if files.is_empty() {
            return Err(Error::ModelNotFound(format!(
                "{repo_id} has no {q} quantization; {}",
                available()
            )));
        }
        return Ok(files);
    }
    if siblings
        .iter()
        .any(|s| s.rfilename.ends_with(".safetensors"))
    {
        return Ok(siblings
            .iter()
            .filter(|s| wanted_in_directory(&s.rfilename))
            .cloned()
            .collect());
    }
    match quants.as_slice() {
        [] if ggufs.len() == 1 => Ok(vec![ggufs[0].clone()]),
        [] => Err(Error::ModelNotFound(format!(
            "{repo_id} has neither safetensors weights nor GGUF files with a quantization in their name"
        ))),
        [one] => Ok(of_quant(one)),
        _ if quants.iter().any(|q| q == DEFAULT_QUANT) => Ok(of_quant(DEFAULT_QUANT)),
        _ => Err(Error::ModelNotFound(format!(
            "{repo_id} holds several quantizations; name one: {listed}"
        ))),
    }
}

/// Whether a file of a model directory is fetched.
fn wanted_in_directory(name: &str) -> bool {
    let extension = Path::new(name)
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("");
    !name.starts_with('.')
        && !SKIPPED_EXTENSIONS.contains(&extension)
        && !SKIPPED_FOLDERS.iter().any(|f| name.starts_with(f))
}

/// A cached file of the right size (hf-hub links it into the snapshot only once complete).
fn is_cached(path: &Path, size: Option<u64>) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && size.is_none_or(|s| s == m.len()))
}

/// How a file's content is checked: LFS files by sha256, others by their git blob id.
#[derive(Debug, Clone, Copy, PartialEq)]
enum HashKind {
    Sha256,
    GitBlob,
}

impl std::fmt::Display for HashKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HashKind::Sha256 => "sha256",
            HashKind::GitBlob => "git blob id",
        })
    }
}

enum Hasher {
    Sha256(sha2::Sha256),
    GitBlob(sha1::Sha1),
}

impl Hasher {
    fn new(kind: HashKind, size: u64) -> Self {
        match kind {
            HashKind::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            HashKind::GitBlob => {
                let mut sha1 = sha1::Sha1::new();
                sha1.update(format!("blob {size}\0"));
                Hasher::GitBlob(sha1)
            }
        }
    }

    fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(data),
            Hasher::GitBlob(h) => h.update(data),
        }
    }

    fn hex(self) -> String {
        let digest = match self {
            Hasher::Sha256(h) => h.finalize().to_vec(),
            Hasher::GitBlob(h) => h.finalize().to_vec(),
        };
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// One file of a pull: streamed into `blobs/<hash>.incomplete` (resumed when one is there),
/// checked, renamed to its blob and linked into the snapshot.
struct FileFetch<'a> {
    api: &'a Api,
    url: String,
    repo_dir: &'a Path,
    commit: &'a str,
    sibling: &'a Sibling,
    /// `repo/file`, for errors.
    label: String,
}

impl FileFetch<'_> {
    fn error(&self, message: impl Into<String>) -> Error {
        Error::Download {
            file: self.label.clone(),
            message: message.into(),
        }
    }

    /// Fetch, check and link the file; the bytes fetched now.
    async fn run(&self, progress: &dyn PullProgress) -> Result<u64> {
        let name = &self.sibling.rfilename;
        let (kind, expected) = match (&self.sibling.lfs, &self.sibling.blob_id) {
            (Some(lfs), _) => (HashKind::Sha256, lfs.sha256.to_ascii_lowercase()),
            (None, Some(id)) => (HashKind::GitBlob, id.to_ascii_lowercase()),
            (None, None) => return Err(self.error("the hub's listing gives no hash for it")),
        };
        if !expected.bytes().all(|b| b.is_ascii_hexdigit()) || expected.is_empty() {
            return Err(self.error(format!("the hub gives an odd hash `{expected}`")));
        }
        let blobs = self.repo_dir.join("blobs");
        std::fs::create_dir_all(&blobs).map_err(|e| Error::io(&blobs, e))?;
        let blob = blobs.join(&expected);
        // Where the `hf` CLI keeps its locks: `<cache>/.locks/<repo folder>/<hash>.lock`.
        let locks = match (self.repo_dir.parent(), self.repo_dir.file_name()) {
            (Some(cache), Some(folder)) => cache.join(".locks").join(folder),
            _ => blobs.clone(),
        };
        std::fs::create_dir_all(&locks).map_err(|e| Error::io(&locks, e))?;
        let _lock = lock(&locks.join(format!("{expected}.lock"))).await?;
        let size = self.sibling.size;
        let mut fetched = 0;
        if !is_cached(&blob, size) {
            let partial = blobs.join(format!("{expected}.incomplete"));
            fetched = self.download(&partial, kind, &expected, progress).await?;
            std::fs::rename(&partial, &blob).map_err(|e| Error::io(&blob, e))?;
        }
        let pointer = self.repo_dir.join("snapshots").join(self.commit).join(name);
        link(
            &pointer,
            &format!(
                "{}blobs/{expected}",
                "../".repeat(name.split('/').count() + 1)
            ),
        )?;
        Ok(fetched)
    }

    /// Stream the file into `partial` from where it stops, hashing as it lands.
    async fn download(
        &self,
        partial: &Path,
        kind: HashKind,
        expected: &str,
        progress: &dyn PullProgress,
    ) -> Result<u64> {
        let name = &self.sibling.rfilename;
        let mut have = std::fs::metadata(partial).map(|m| m.len()).unwrap_or(0);
        if self.sibling.size.is_some_and(|s| have > s) {
            have = 0;
        }
        let mut request = self.api.client().get(&self.url);
        if have > 0 {
            request = request.header("Range", format!("bytes={have}-"));
        }
        let mut response = request
            .send()
            .await
            .map_err(|e| self.error(format!("{e} (pull again to resume)")))?;
        let status = response.status().as_u16();
        match status {
            206 => {}
            200 => have = 0,
            416 if Some(have) == self.sibling.size => {}
            401 | 403 => {
                return Err(self.error("access denied: the repo is gated or private; set HF_TOKEN"))
            }
            404 => return Err(self.error("not found on the hub")),
            code => return Err(self.error(format!("the hub answered HTTP {code}"))),
        }
        let total = self
            .sibling
            .size
            .or_else(|| response.content_length().map(|l| l + have))
            .unwrap_or(0);
        progress.file_started(name, total);
        progress.advanced(name, have);

        // The writer thread appends and hashes (what was there first, then each piece).
        let (batches, received) = std::sync::mpsc::channel::<Vec<bytes::Bytes>>();
        let path = partial.to_path_buf();
        let writer = tokio::task::spawn_blocking(move || -> std::io::Result<(String, u64)> {
            use std::io::{Read, Seek, Write};
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .read(true)
                .write(true)
                .open(&path)?;
            file.set_len(have)?;
            let mut hasher = Hasher::new(kind, total);
            let mut buffer = vec![0u8; 1 << 20];
            let mut left = have;
            while left > 0 {
                let n = file.read(&mut buffer[..left.min(1 << 20) as usize])?;
                if n == 0 {
                    break;
                }
                hasher.update(&buffer[..n]);
                left -= n as u64;
            }
            file.seek(std::io::SeekFrom::Start(have))?;
            let mut written = have;
            for piece in received.iter().flatten() {
                file.write_all(&piece)?;
                hasher.update(&piece);
                written += piece.len() as u64;
            }
            Ok((hasher.hex(), written))
        });
        let mut fetched = 0;
        // Pieces go to the writer in batches of about a megabyte: one wake-up each, no copy.
        let mut batch = Vec::new();
        let mut batched = 0;
        let streamed: Result<()> = async {
            while let Some(piece) = response
                .chunk()
                .await
                .map_err(|e| self.error(format!("{e} (pull again to resume)")))?
            {
                fetched += piece.len() as u64;
                progress.advanced(name, piece.len() as u64);
                batched += piece.len();
                batch.push(piece);
                if batched >= BATCH_BYTES {
                    batched = 0;
                    if batches.send(std::mem::take(&mut batch)).is_err() {
                        return Ok(());
                    }
                }
            }
            Ok(())
        }
        .await;
        if !batch.is_empty() {
            let _ = batches.send(batch);
        }
        drop(batches);
        let (actual, written) = writer
            .await
            .map_err(|e| self.error(e.to_string()))?
            .map_err(|e| Error::io(partial, e))?;
        streamed?;
        if self.sibling.size.is_some_and(|s| s != written) {
            return Err(self.error(format!(
                "the connection ended at byte {written} of {total} (pull again to resume)"
            )));
        }
        if actual != expected {
            let _ = std::fs::remove_file(partial);
            return Err(self.error(format!(
                "checksum mismatch: the hub says {kind} {expected}, the download has {actual}; the file was removed, pull again"
            )));
        }
        Ok(fetched)
    }
}

/// Hold `path` locked (another pull of the same blob waits) until the file is dropped.
async fn lock(path: &Path) -> Result<std::fs::File> {
    let file = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        use std::os::fd::AsRawFd;
        // SAFETY: flock on a descriptor this function owns; it is released when the file closes.
        match unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } {
            0 => Ok(file),
            _ => Err(Error::io(&path, std::io::Error::last_os_error())),
        }
    })
    .await
    .map_err(|e| Error::engine("download", e.to_string()))?
}

/// Point the snapshot's `pointer` at its blob (`target`, relative), replacing a stale link.
fn link(pointer: &Path, target: &str) -> Result<()> {
    if let Some(parent) = pointer.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    if std::fs::symlink_metadata(pointer).is_ok() {
        std::fs::remove_file(pointer).map_err(|e| Error::io(pointer, e))?;
    }
    std::os::unix::fs::symlink(target, pointer).map_err(|e| Error::io(pointer, e))
}

fn write_ref(repo_dir: &Path, revision: &str, commit: &str) -> Result<()> {
    if revision == commit {
        return Ok(());
    }
    let path = repo_dir.join("refs").join(revision);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    std::fs::write(&path, commit).map_err(|e| Error::io(&path, e))
}

/// A pull as its followers see it: each file's size and bytes so far, then how it ended.
#[derive(Debug, Clone, Default)]
pub struct PullState {
    /// `(file, size, bytes so far)`, in the order the files started.
    pub files: Vec<(String, u64, u64)>,
    /// How it ended: the model's local path, or the error; `None` while it runs.
    pub outcome: Option<std::result::Result<PathBuf, Arc<Error>>>,
}

/// Pulls in flight, by reference: asking for one that is running follows it instead of starting
/// another (two clients pulling one model download it once).
#[derive(Default)]
pub struct Pulls {
    running: std::sync::Mutex<
        std::collections::HashMap<String, tokio::sync::watch::Receiver<PullState>>,
    >,
}

impl Pulls {
    /// Follow the pull of `reference` (see [`pull`]), starting it unless one is running; the
    /// receiver's last state has an `outcome` once it ended.
    pub fn follow(self: &Arc<Self>, reference: &str) -> tokio::sync::watch::Receiver<PullState> {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(state) = running.get(reference) {
            return state.clone();
        }
        let (sender, receiver) = tokio::sync::watch::channel(PullState::default());
        running.insert(reference.to_string(), receiver.clone());
        let (pulls, reference) = (Arc::clone(self), reference.to_string());
        tokio::spawn(async move {
            let sender = Arc::new(WatchedProgress(sender));
            let progress: Arc<dyn PullProgress> = sender.clone();
            let outcome = pull(&reference, None, progress).await;
            if let Ok(pulled) = &outcome {
                tracing::info!(model = %reference, bytes = pulled.bytes, "pulled");
            }
            // Gone from the running ones before the end is told: a pull asked for after it
            // sees the outcome starts afresh.
            let mut running = pulls.running.lock().unwrap_or_else(|e| e.into_inner());
            running.remove(&reference);
            sender.0.send_modify(|state| {
                state.outcome = Some(outcome.map(|p| p.path).map_err(Arc::new));
            });
        });
        receiver
    }
}

/// Progress into a [`PullState`] that followers watch.
struct WatchedProgress(tokio::sync::watch::Sender<PullState>);

impl PullProgress for WatchedProgress {
    fn planned(&self, _files: &[(String, u64)]) {}

    fn file_started(&self, file: &str, size: u64) {
        self.0
            .send_modify(|state| state.files.push((file.to_string(), size, 0)));
    }

    fn advanced(&self, file: &str, bytes: u64) {
        self.0.send_modify(|state| {
            if let Some(entry) = state.files.iter_mut().find(|(f, _, _)| f == file) {
                entry.2 += bytes;
            }
        });
    }

    fn file_finished(&self, file: &str) {
        self.0.send_modify(|state| {
            if let Some(entry) = state.files.iter_mut().find(|(f, _, _)| f == file) {
                entry.2 = entry.1.max(entry.2);
            }
        });
    }
}

/// Progress as log lines (for `serve`): each file's start, then every tenth of it, and its end.
#[derive(Default)]
pub struct LoggedProgress {
    files: std::sync::Mutex<std::collections::HashMap<String, (u64, u64)>>,
}

impl PullProgress for LoggedProgress {
    fn planned(&self, files: &[(String, u64)]) {
        let total: u64 = files.iter().map(|(_, s)| s).sum();
        tracing::info!(files = files.len(), bytes = total, "pulling");
    }

    fn file_started(&self, file: &str, size: u64) {
        tracing::info!(file, bytes = size, "downloading");
        let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        files.insert(file.to_string(), (size, 0));
    }

    fn advanced(&self, file: &str, bytes: u64) {
        let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((size, done)) = files.get_mut(file) {
            let before = *done * 10 / (*size).max(1);
            *done += bytes;
            let after = *done * 10 / (*size).max(1);
            if after > before && after < 10 {
                tracing::info!(file, percent = after * 10, "downloading");
            }
        }
    }

    fn file_finished(&self, file: &str) {
        tracing::info!(file, "downloaded and checked");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sibling(name: &str) -> Sibling {
        Sibling {
            rfilename: name.to_string(),
            size: None,
            blob_id: None,
            lfs: None,
        }
    }

    fn names(files: Result<Vec<Sibling>>) -> Vec<String> {
        files.unwrap().into_iter().map(|s| s.rfilename).collect()
    }

    #[test]
    fn quantizations_are_picked_by_name() {
        let repo: Vec<Sibling> = [
            "README.md",
            "m-Q4_K_M.gguf",
            "m-Q8_0.gguf",
            "mmproj-m-F16.gguf",
            "big/m-Q6_K-00002-of-00002.gguf",
            "big/m-Q6_K-00001-of-00002.gguf",
        ]
        .map(sibling)
        .to_vec();
        assert_eq!(
            names(select_files(&repo, Some("q8_0"), "o/m")),
            ["m-Q8_0.gguf"]
        );
        assert_eq!(
            names(select_files(&repo, Some("Q6_K"), "o/m")),
            [
                "big/m-Q6_K-00001-of-00002.gguf",
                "big/m-Q6_K-00002-of-00002.gguf"
            ]
        );
        assert_eq!(names(select_files(&repo, None, "o/m")), ["m-Q4_K_M.gguf"]);
        let err = select_files(&repo, Some("Q2_K"), "o/m")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no Q2_K") && err.contains("o/m:Q4_K_M, o/m:Q6_K, o/m:Q8_0"),
            "{err}"
        );
        let two = [sibling("m.Q4_1.gguf"), sibling("m.Q8_0.gguf")];
        let err = select_files(&two, None, "o/m").unwrap_err().to_string();
        assert!(err.contains("name one"), "{err}");
    }

    #[test]
    fn directories_skip_other_frameworks() {
        let repo: Vec<Sibling> = [
            ".gitattributes",
            "config.json",
            "model.safetensors",
            "pytorch_model.bin",
            "onnx/model.onnx",
            "original/consolidated.pth",
            "tokenizer.json",
        ]
        .map(sibling)
        .to_vec();
        assert_eq!(
            names(select_files(&repo, None, "o/m")),
            ["config.json", "model.safetensors", "tokenizer.json"]
        );
    }
}
