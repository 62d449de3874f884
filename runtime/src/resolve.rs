//! Model references: a local path, or a Hugging Face repo id found in the local Hugging Face cache
//! (the layout `huggingface-cli download` writes). Downloads are not done here.

use std::path::{Path, PathBuf};

use hf_hub::{Cache, Repo, RepoType};

use crate::error::{Error, Result};

/// Turn `reference` into a local file or directory. A path that exists wins; otherwise an
/// `org/name` id is looked up in the Hugging Face cache at `revision` (default `main`). In a repo,
/// `file` picks one file; without it a repo with `config.json` resolves to its snapshot directory
/// and one with a single `.gguf` to that file.
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
    if !looks_like_repo_id(reference) {
        return Err(Error::ModelNotFound(format!(
            "{reference}: no such file or directory"
        )));
    }
    let cache = hf_cache()?;
    let revision = revision.unwrap_or("main");
    let repo = Repo::with_revision(reference.to_string(), RepoType::Model, revision.to_string());
    let not_cached = || {
        Error::ModelNotFound(format!(
            "{reference} (revision {revision}) is not a local path and is not in the Hugging Face cache at {}",
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
    if snapshot.join("config.json").is_file() {
        return Ok(snapshot);
    }
    let ggufs: Vec<PathBuf> = std::fs::read_dir(&snapshot)
        .map_err(|e| Error::io(&snapshot, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "gguf"))
        .collect();
    match ggufs.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(not_cached()),
        many => Err(Error::ModelNotFound(format!(
            "{reference} holds {} GGUF files; set `file` to one of: {}",
            many.len(),
            many.iter()
                .filter_map(|p| p.file_name()?.to_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// `org/name` with no path-like parts.
fn looks_like_repo_id(reference: &str) -> bool {
    let mut parts = reference.split('/');
    matches!((parts.next(), parts.next(), parts.next()), (Some(org), Some(name), None)
        if !org.is_empty() && !name.is_empty() && org != "." && org != ".." && !reference.ends_with(".gguf"))
}

/// The cache: `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`.
fn hf_cache() -> Result<Cache> {
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
                resolve_model_path("org/name", Some("m.Q8.gguf"), Some("abc123")).unwrap(),
                snap.join("m.Q8.gguf")
            );
            let err = resolve_model_path("org/other", None, None)
                .unwrap_err()
                .to_string();
            assert!(err.contains("not in the Hugging Face cache"), "{err}");
            Ok(())
        });
    }
}
