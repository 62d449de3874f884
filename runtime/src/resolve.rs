//! Model references: a local path, or a Hugging Face repo id (`org/name`, `org/name:QUANT` for one
//! quantization of a GGUF repo) found in the local Hugging Face cache (the layout the `hf` CLI and
//! `minerva pull` write). Downloads are [`crate::pull`]'s.

use std::path::{Path, PathBuf};

use hf_hub::{Cache, Repo, RepoType};

use crate::error::{Error, Result};

/// Turn `reference` into a local file or directory. A path that exists wins; otherwise an
/// `org/name[:QUANT]` id is looked up in the Hugging Face cache at `revision` (default `main`). In
/// a repo, `file` picks one file; without it a quantization picks its GGUF (the first part of a
/// split one), a repo with `config.json` resolves to its snapshot directory and one with a single
/// GGUF quantization to that file.
pub fn resolve_model_path(
    reference: &str,
    file: Option<&str>,
    revision: Option<&str>,
) -> Result<PathBuf> {
    let local = Path::new(reference);
    if local.exists() {
        return Ok(match file {
            Some(f) if local.is_dir() => local.join(f),
            _ => local.to_path_buf(),
        });
    }
    let Some((repo_id, quant)) = parse_repo_reference(reference) else {
        return Err(Error::ModelNotFound(format!(
            "{reference}: no such file or directory"
        )));
    };
    let cache = hf_cache()?;
    let revision = revision.unwrap_or("main");
    let repo = Repo::with_revision(repo_id.to_string(), RepoType::Model, revision.to_string());
    let not_cached = || {
        Error::ModelNotFound(format!(
            "{reference} (revision {revision}) is not a local path and is not in the Hugging Face cache at {}; `minerva pull {reference}` fetches it",
            cache.path().display()
        ))
    };
    let snapshot = snapshot_dir(&cache, &repo).ok_or_else(not_cached)?;
    if let Some(f) = file {
        let path = snapshot.join(f);
        return if path.exists() {
            Ok(path)
        } else {
            Err(Error::ModelNotFound(format!(
                "{reference}: file {f} is not in the cached snapshot {}",
                snapshot.display()
            )))
        };
    }
    if quant.is_none() && snapshot.join("config.json").is_file() {
        return Ok(snapshot);
    }
    let mut ggufs: Vec<PathBuf> = gguf_files(&snapshot)?;
    ggufs.sort();
    if let Some(q) = quant {
        ggufs.retain(|p| {
            p.file_name()
                .and_then(|n| quant_of(&n.to_string_lossy()))
                .is_some_and(|f| f.eq_ignore_ascii_case(q))
        });
        return ggufs.into_iter().next().ok_or_else(not_cached);
    }
    let quants: std::collections::BTreeSet<String> = ggufs
        .iter()
        .filter_map(|p| quant_of(&p.file_name()?.to_string_lossy()))
        .collect();
    match (ggufs.as_slice(), quants.len()) {
        ([], _) => Err(not_cached()),
        ([one], _) => Ok(one.clone()),
        ([first, ..], 1) => Ok(first.clone()),
        (many, _) => Err(Error::ModelNotFound(format!(
            "{reference} holds {} GGUF files; name a quantization ({}) or set `file` to one of: {}",
            many.len(),
            quants
                .iter()
                .map(|q| format!("{reference}:{q}"))
                .collect::<Vec<_>>()
                .join(", "),
            many.iter()
                .filter_map(|p| p.strip_prefix(&snapshot).ok()?.to_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// A model in the Hugging Face cache, by the reference that resolves to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedModel {
    /// `org/name`, or `org/name:QUANT` for one of several GGUF quantizations.
    pub reference: String,
    /// What the reference resolves to.
    pub path: PathBuf,
}

/// Every model in the Hugging Face cache at its `main` revision: a snapshot with `config.json`
/// as `org/name`, a snapshot's GGUF quantizations as `org/name:QUANT` each (`org/name` for a GGUF
/// whose name tells none). Unreadable entries are skipped.
pub fn cached_models() -> Vec<CachedModel> {
    let Ok(cache) = hf_cache() else {
        return Vec::new();
    };
    let Ok(repos) = std::fs::read_dir(cache.path()) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    let mut repos: Vec<PathBuf> = repos.filter_map(|e| Some(e.ok()?.path())).collect();
    repos.sort();
    for folder in repos {
        let Some(repo_id) = folder
            .file_name()
            .and_then(|n| n.to_str()?.strip_prefix("models--"))
            .map(|rest| rest.replacen("--", "/", 1))
        else {
            continue;
        };
        let repo = Repo::with_revision(repo_id.clone(), RepoType::Model, "main".into());
        let Some(snapshot) = snapshot_dir(&cache, &repo) else {
            continue;
        };
        if snapshot.join("config.json").is_file() {
            found.push(CachedModel {
                reference: repo_id.clone(),
                path: snapshot.clone(),
            });
        }
        let mut ggufs = gguf_files(&snapshot).unwrap_or_default();
        ggufs.sort();
        let mut quants: Vec<(String, PathBuf)> = Vec::new();
        for path in ggufs {
            let quant = path
                .file_name()
                .and_then(|n| quant_of(&n.to_string_lossy()))
                .unwrap_or_default();
            if !quants.iter().any(|(q, _)| *q == quant) {
                quants.push((quant, path));
            }
        }
        found.extend(quants.into_iter().map(|(quant, path)| CachedModel {
            reference: match quant.is_empty() {
                true => repo_id.clone(),
                false => format!("{repo_id}:{quant}"),
            },
            path,
        }));
    }
    found
}

/// Remove `reference` (`org/name` or `org/name:QUANT`) from the Hugging Face cache: a
/// quantization's files and the blobs they point to, or the whole repo (also when nothing else
/// of it is left). Returns the bytes freed.
pub fn remove_cached(reference: &str) -> Result<u64> {
    let (repo_id, quant) = parse_repo_reference(reference).ok_or_else(|| {
        Error::InvalidRequest(format!(
            "{reference} is not a Hugging Face repo id (`org/name` or `org/name:QUANT`)"
        ))
    })?;
    let cache = hf_cache()?;
    let repo = Repo::with_revision(repo_id.to_string(), RepoType::Model, "main".into());
    let base = cache.path().join(repo.folder_name());
    let missing = || Error::ModelNotFound(format!("{reference} is not in the Hugging Face cache"));
    let snapshot = snapshot_dir(&cache, &repo).ok_or_else(missing)?;
    let size = |path: &Path| std::fs::metadata(path).map_or(0, |m| m.len());
    if let Some(q) = quant {
        let files: Vec<PathBuf> = gguf_files(&snapshot)?
            .into_iter()
            .filter(|p| {
                p.file_name()
                    .and_then(|n| quant_of(&n.to_string_lossy()))
                    .is_some_and(|f| f.eq_ignore_ascii_case(q))
            })
            .collect();
        if files.is_empty() {
            return Err(missing());
        }
        let mut freed = 0;
        for file in &files {
            // The snapshot holds links into blobs/; the blob is the data.
            if let Ok(blob) = std::fs::canonicalize(file) {
                freed += size(&blob);
                std::fs::remove_file(&blob).map_err(|e| Error::io(&blob, e))?;
            }
            std::fs::remove_file(file).map_err(|e| Error::io(file, e))?;
        }
        let left = !gguf_files(&snapshot)?.is_empty() || snapshot.join("config.json").is_file();
        if left {
            return Ok(freed);
        }
    }
    let freed = folder_bytes(&base.join("blobs"));
    std::fs::remove_dir_all(&base).map_err(|e| Error::io(&base, e))?;
    Ok(freed)
}

/// Bytes of the files directly in `folder` (0 when unreadable).
fn folder_bytes(folder: &Path) -> u64 {
    std::fs::read_dir(folder).map_or(0, |entries| {
        entries
            .filter_map(|e| e.ok()?.metadata().ok())
            .filter(|m| m.is_file())
            .map(|m| m.len())
            .sum()
    })
}

/// The GGUF files of a snapshot, in its folders too (split quantizations often sit in one).
fn gguf_files(snapshot: &Path) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut folders = vec![snapshot.to_path_buf()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).map_err(|e| Error::io(&folder, e))? {
            let path = entry.map_err(|e| Error::io(&folder, e))?.path();
            if path.is_dir() {
                folders.push(path);
            } else if path.extension().is_some_and(|x| x == "gguf")
                && !path.to_string_lossy().contains("mmproj")
            {
                found.push(path);
            }
        }
    }
    Ok(found)
}

/// `org/name` or `org/name:QUANT` (no path-like parts): the repo id and the quantization.
pub fn parse_repo_reference(reference: &str) -> Option<(&str, Option<&str>)> {
    let (repo, quant) = match reference.rsplit_once(':') {
        Some((repo, quant)) if !quant.is_empty() && !quant.contains('/') => (repo, Some(quant)),
        _ => (reference, None),
    };
    looks_like_repo_id(repo).then_some((repo, quant))
}

/// The quantization named in a GGUF file name (`Q4_K_M`, `IQ2_XXS`, `Q8_0`, `F16`, `BF16` ...),
/// upper-cased: the last `-`/`.`-separated part of the stem that looks like one (a split file's
/// `-00001-of-00003` ignored).
pub fn quant_of(file_name: &str) -> Option<String> {
    let name = file_name.rsplit('/').next()?;
    let stem = name.strip_suffix(".gguf").unwrap_or(name);
    stem.split(['-', '.'])
        .map(|part| part.to_ascii_uppercase())
        .rfind(|part| {
            let after = |prefix: &str| part.strip_prefix(prefix).and_then(|r| r.chars().next());
            ["Q", "IQ", "TQ"]
                .iter()
                .any(|p| after(p).is_some_and(|c| c.is_ascii_digit()))
                || ["F16", "BF16", "F32", "FP16", "FP32"].contains(&part.as_str())
                || part.starts_with("MXFP4")
        })
}

/// `org/name` with no path-like parts.
fn looks_like_repo_id(reference: &str) -> bool {
    let mut parts = reference.split('/');
    matches!((parts.next(), parts.next(), parts.next()), (Some(org), Some(name), None)
        if !org.is_empty() && !name.is_empty() && org != "." && org != ".." && !reference.ends_with(".gguf"))
}

/// The cache: `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`.
pub(crate) fn hf_cache() -> Result<Cache> {
    if let Some(dir) = std::env::var_os("HF_HUB_CACHE") {
        return Ok(Cache::new(PathBuf::from(dir)));
    }
    if std::env::var_os("HF_HOME").is_some() {
        return Ok(Cache::from_env());
    }
    let home = std::env::var_os("HOME").ok_or_else(|| {
        Error::ModelNotFound(
            "no HOME, HF_HOME or HF_HUB_CACHE to find the Hugging Face cache".into(),
        )
    })?;
    Ok(Cache::new(
        PathBuf::from(home)
            .join(".cache")
            .join("huggingface")
            .join("hub"),
    ))
}

/// The snapshot directory of `repo` at its revision: a ref name (`refs/<rev>` holds the commit) or
/// a commit hash.
fn snapshot_dir(cache: &Cache, repo: &Repo) -> Option<PathBuf> {
    let base = cache.path().join(repo.folder_name());
    let commit = std::fs::read_to_string(base.join("refs").join(repo.revision()))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| repo.revision().to_string());
    let dir = base.join("snapshots").join(commit);
    dir.is_dir().then_some(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids_are_told_from_paths() {
        assert!(looks_like_repo_id("HuggingFaceTB/SmolLM2-135M-Instruct"));
        assert!(!looks_like_repo_id("models/x/y.gguf"));
        assert!(!looks_like_repo_id("./x"));
        assert!(!looks_like_repo_id("x"));
        assert!(!looks_like_repo_id("dir/model.gguf"));
        assert_eq!(
            parse_repo_reference("org/m-GGUF:Q4_K_M"),
            Some(("org/m-GGUF", Some("Q4_K_M")))
        );
        assert_eq!(parse_repo_reference("org/m"), Some(("org/m", None)));
        assert_eq!(parse_repo_reference("/abs/x:y"), None);
    }

    #[test]
    fn quantizations_are_read_from_file_names() {
        assert_eq!(
            quant_of("SmolLM2-135M-Instruct.Q4_1.gguf").as_deref(),
            Some("Q4_1")
        );
        assert_eq!(
            quant_of("gemma-3-270m-it-UD-Q4_K_XL.gguf").as_deref(),
            Some("Q4_K_XL")
        );
        assert_eq!(
            quant_of("d/Qwen3-30B-IQ2_XXS-00001-of-00003.gguf").as_deref(),
            Some("IQ2_XXS")
        );
        assert_eq!(quant_of("model-bf16.gguf").as_deref(), Some("BF16"));
        assert_eq!(quant_of("model.gguf"), None);
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's signature
    fn cached_repo_resolves_to_snapshot_or_single_gguf() {
        let home = tempfile::tempdir().unwrap();
        let hub = home.path().join("hub");
        let repo = hub.join("models--org--name");
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs/main"), "abc123\n").unwrap();
        let snap = repo.join("snapshots/abc123");
        std::fs::create_dir_all(&snap).unwrap();
        std::fs::write(snap.join("m.Q4.gguf"), b"GGUF").unwrap();
        figment::Jail::expect_with(|jail| {
            jail.set_env("HF_HUB_CACHE", hub.display());
            assert_eq!(
                resolve_model_path("org/name", None, None).unwrap(),
                snap.join("m.Q4.gguf")
            );
            std::fs::write(snap.join("m.Q8.gguf"), b"GGUF").unwrap();
            let err = resolve_model_path("org/name", None, None)
                .unwrap_err()
                .to_string();
            assert!(err.contains("set `file`"), "{err}");
            assert_eq!(
                resolve_model_path("org/name:q8", None, None).unwrap(),
                snap.join("m.Q8.gguf")
            );
            assert_eq!(
                resolve_model_path("org/name", Some("m.Q8.gguf"), Some("abc123")).unwrap(),
                snap.join("m.Q8.gguf")
            );
            let err = resolve_model_path("org/other", None, None)
                .unwrap_err()
                .to_string();
            assert!(err.contains("not in the Hugging Face cache"), "{err}");
            let listed: Vec<String> = cached_models().into_iter().map(|m| m.reference).collect();
            assert_eq!(listed, ["org/name:Q4", "org/name:Q8"]);
            // A quantization goes with its blob; the last one takes the repo.
            std::fs::create_dir_all(repo.join("blobs")).unwrap();
            std::fs::write(repo.join("blobs/q8blob"), b"GGUF-Q8").unwrap();
            std::fs::remove_file(snap.join("m.Q8.gguf")).unwrap();
            std::os::unix::fs::symlink(repo.join("blobs/q8blob"), snap.join("m.Q8.gguf")).unwrap();
            assert_eq!(remove_cached("org/name:Q8").unwrap(), 7);
            assert!(!repo.join("blobs/q8blob").exists() && snap.join("m.Q4.gguf").exists());
            assert_eq!(cached_models()[0].reference, "org/name:Q4");
            assert!(remove_cached("org/name:Q8").is_err());
            remove_cached("org/name").unwrap();
            assert!(!repo.exists() && cached_models().is_empty());
            Ok(())
        });
    }
}
