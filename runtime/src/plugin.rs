//! Engines as run-time plugins, the host's side: find shared libraries in plugin folders, check
//! the [`PluginDeclaration`] each exports against this build, and only then take its engine.
//! Engines run their blocking work on their own threads and never touch the host's async
//! runtime. Libraries are opened with local symbol binding and stay loaded for the life of the
//! process. What a plugin declares is `minerva_core::plugin`; docs/PLUGINS.md has the whole
//! contract.

use std::ffi::CStr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use minerva_core::plugin::{abi_fingerprint, PluginDeclaration, ENTRY_POINT, PLUGIN_API_VERSION};

use crate::backend::InferenceBackend;
use crate::error::{Error, Result};

/// A plugin file that could not be used, and why.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PluginFailure {
    /// The file.
    pub path: PathBuf,
    /// Why it was skipped.
    pub reason: String,
}

/// Engines found in plugin folders, and the files that failed.
#[derive(Default)]
pub struct PluginScan {
    /// Loaded engines with their files.
    pub engines: Vec<(Arc<dyn InferenceBackend>, PathBuf)>,
    /// Files skipped, with reasons.
    pub failures: Vec<PluginFailure>,
}

/// Load every shared library in `dirs` (in name order). A missing folder is an error naming it;
/// a file that is not a usable plugin is reported in the scan and skipped.
pub fn scan(dirs: &[PathBuf]) -> Result<PluginScan> {
    let mut result = PluginScan::default();
    for dir in dirs {
        let entries = std::fs::read_dir(dir)
            .map_err(|e| Error::Config(format!("plugin folder {}: {e}", dir.display())))?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| is_shared_library(p))
            .collect();
        files.sort();
        for path in files {
            match load(&path) {
                Ok(engine) => result.engines.push((engine, path)),
                Err(reason) => result.failures.push(PluginFailure { path, reason }),
            }
        }
    }
    Ok(result)
}

fn is_shared_library(path: &Path) -> bool {
    path.is_file()
        && path
            .extension()
            .is_some_and(|e| e == "so" || e == "dylib" || e == "dll")
}

/// Open one plugin and create its engine, or say why not.
pub fn load(path: &Path) -> std::result::Result<Arc<dyn InferenceBackend>, String> {
    let library = open_local(path)?;
    // SAFETY: the symbol is only called after it is found; its signature is the documented
    // C-ABI one, and the declaration it returns is plain C data.
    let declaration = unsafe {
        let entry = library
            .get::<extern "C" fn() -> PluginDeclaration>(ENTRY_POINT.as_bytes())
            .map_err(|_| format!("not a Minerva plugin: it has no `{ENTRY_POINT}` entry point"))?;
        entry()
    };
    if declaration.api_version != PLUGIN_API_VERSION {
        return Err(format!(
            "plugin interface version {} but this minerva speaks version {PLUGIN_API_VERSION}",
            declaration.api_version
        ));
    }
    if declaration.abi.is_null() {
        return Err("the plugin declares no build fingerprint".into());
    }
    // SAFETY: a non-null, NUL-terminated string in the plugin's read-only data.
    let theirs = unsafe { CStr::from_ptr(declaration.abi) }.to_string_lossy();
    if theirs != abi_fingerprint() {
        return Err(format!(
            "built for `{theirs}`, but this minerva is `{}`: rebuild the plugin with the same \
             toolchain and minerva-core version",
            abi_fingerprint()
        ));
    }
    // SAFETY: same interface version and same build fingerprint, so the pointer is a
    // `Box<Arc<dyn InferenceBackend>>` whose layout this build shares.
    let engine =
        unsafe { *Box::from_raw((declaration.create)().cast::<Arc<dyn InferenceBackend>>()) };
    // Engines and the models they load hold code from the library: keep it for good.
    std::mem::forget(library);
    Ok(engine)
}

/// Open `path` with its symbols kept local, so that two plugins (or a plugin and the host)
/// defining the same C symbols each keep their own.
fn open_local(path: &Path) -> std::result::Result<libloading::Library, String> {
    #[cfg(unix)]
    let library = {
        use libloading::os::unix::{Library, RTLD_LOCAL, RTLD_NOW};
        // SAFETY: loading runs the library's initialisers; plugins are trusted code the user
        // put in a plugin folder.
        unsafe { Library::open(Some(path), RTLD_NOW | RTLD_LOCAL) }.map(libloading::Library::from)
    };
    #[cfg(not(unix))]
    // SAFETY: as above.
    let library = unsafe { libloading::Library::new(path) };
    library.map_err(|e| format!("cannot be loaded: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_folder_is_named_and_junk_is_skipped() {
        let err = scan(&["/no/such/plugins".into()])
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("/no/such/plugins"), "{err}");
        let dir = std::env::temp_dir().join(format!("minerva-plugins-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("junk.so"), b"not an ELF file").unwrap();
        std::fs::write(dir.join("notes.txt"), b"ignored").unwrap();
        let found = scan(std::slice::from_ref(&dir)).unwrap();
        assert!(found.engines.is_empty());
        assert_eq!(found.failures.len(), 1);
        assert!(found.failures[0].path.ends_with("junk.so"));
        assert!(found.failures[0].reason.contains("cannot be loaded"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
