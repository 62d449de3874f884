//! ggml's backends as libraries loaded at run time, behind this one seam. llama.cpp is built with
//! ggml's dynamic backends (`llama-cpp-sys-2`'s `dynamic-backends`): the CPU kernels exist once
//! per x86 level (`libggml-cpu-haswell.so`, `-skylakex`, `-icelake`, `-zen4`, ...), beside ggml's
//! RPC client and any GPU backend (`libggml-cuda.so`, built by `scripts/build-ggml-cuda` from the
//! same llama.cpp sources). When the engine starts, the CPU level that this machine
//! supports best is loaded (or the one `MINERVA_LLAMA_CPU` pins), then every other module found.
//!
//! The AMX level (`sapphirerapids`) is never picked on its own: ggml's AMX kernels crashed on the
//! first decode on one of our Xeon machines (upstream issue 20824). Pinning it is the user's call.

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use minerva_core::{Error, Result};

use crate::ENGINE_NAME;

/// Pins the CPU level (a `libggml-cpu-<level>.so` name, e.g. `haswell`), without the prefix
/// `MINERVA_`: read by the engine itself.
pub const CPU_LEVEL_VAR: &str = "LLAMA_CPU";
/// A folder holding ggml's backend libraries, searched instead of the default places.
pub const MODULES_DIR_VAR: &str = "GGML_BACKENDS";
/// CPU levels never picked automatically (AMX: see the module's documentation).
const UNSAFE_LEVELS: &[&str] = &["sapphirerapids"];
/// File name prefix and suffix of ggml's backend libraries.
const PREFIX: &str = "libggml-";
const SUFFIX: &str = ".so";

/// What was loaded into this process.
#[derive(Debug, Clone)]
pub struct Modules {
    /// The folder the libraries came from.
    pub dir: PathBuf,
    /// The CPU level whose kernels run (`zen4`, `haswell`, ...).
    pub cpu_level: String,
    /// The other backends loaded (`rpc`, `cuda`, ...).
    pub others: Vec<String>,
}

/// Load ggml's backends once per process; later calls return the first outcome.
pub fn load() -> Result<&'static Modules> {
    static MODULES: OnceLock<std::result::Result<Modules, String>> = OnceLock::new();
    MODULES
        .get_or_init(|| {
            let pin = std::env::var(format!("MINERVA_{CPU_LEVEL_VAR}"))
                .ok()
                .filter(|v| !v.is_empty() && v != "auto");
            load_from(&search_dirs(), pin.as_deref())
        })
        .as_ref()
        .map_err(|e| Error::engine(ENGINE_NAME, e.clone()))
}

/// Where the libraries are looked for: `MINERVA_GGML_BACKENDS` alone when set, else the
/// executable's `ggml/` folder and its own (a copied installation), then where the build put
/// them.
fn search_dirs() -> Vec<PathBuf> {
    if let Some(dir) = std::env::var_os(format!("MINERVA_{MODULES_DIR_VAR}")) {
        return vec![PathBuf::from(dir)];
    }
    let mut dirs = Vec::new();
    if let Some(exe_dir) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
    {
        dirs.push(exe_dir.join("ggml"));
        dirs.push(exe_dir);
    }
    if let Some(built) = llama_cpp_sys_2::BACKENDS_DIR {
        dirs.push(PathBuf::from(built));
    }
    dirs
}

/// The backend libraries in `dir` by name (`cpu-zen4`, `rpc`, `cuda`), sorted.
fn modules_in(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut found: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let file = entry.file_name().into_string().ok()?;
            let name = file.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
            // ggml-base and ggml itself are linked, not modules.
            (name != "base").then(|| (name.to_string(), entry.path()))
        })
        .collect();
    found.sort();
    found
}

/// Load the best (or pinned) CPU level from the first of `dirs` that holds CPU levels, and every
/// other backend from the first folder that holds it.
fn load_from(dirs: &[PathBuf], pin: Option<&str>) -> std::result::Result<Modules, String> {
    let Some((dir, levels)) = dirs.iter().find_map(|dir| {
        let levels: Vec<(String, PathBuf)> = modules_in(dir)
            .into_iter()
            .filter_map(|(name, path)| Some((name.strip_prefix("cpu-")?.to_string(), path)))
            .collect();
        (!levels.is_empty()).then(|| (dir.clone(), levels))
    }) else {
        return Err(format!(
            "ggml's CPU backend libraries (libggml-cpu-*.so) are in none of {}; set \
             MINERVA_{MODULES_DIR_VAR} to their folder",
            dirs.iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    };
    let mut modules: Vec<(String, PathBuf)> = Vec::new();
    for (name, path) in dirs.iter().flat_map(|d| modules_in(d)) {
        if !name.starts_with("cpu") && !modules.iter().any(|(n, _)| *n == name) {
            modules.push((name, path));
        }
    }
    let levels: Vec<(&str, &Path)> = levels
        .iter()
        .map(|(level, path)| (level.as_str(), path.as_path()))
        .collect();
    // Another copy of this engine in the process (a plugin beside the built-in one) may have
    // loaded them into the same ggml already.
    if let Some(loaded) = registered_library("CPU") {
        let cpu_level = loaded
            .file_name()
            .and_then(|f| f.to_str())
            .and_then(|f| f.strip_prefix("libggml-cpu-")?.strip_suffix(SUFFIX))
            .unwrap_or("unknown")
            .to_string();
        return Ok(Modules {
            dir,
            cpu_level,
            others: modules.into_iter().map(|(name, _)| name).collect(),
        });
    }
    let (cpu_level, cpu_path) = match pin {
        Some(level) => {
            let Some(&(_, path)) = levels.iter().find(|(l, _)| *l == level) else {
                return Err(format!(
                    "MINERVA_{CPU_LEVEL_VAR}={level}: no such CPU level in {} (there: {})",
                    dir.display(),
                    names(&levels)
                ));
            };
            if score(path)? == 0 {
                return Err(format!(
                    "MINERVA_{CPU_LEVEL_VAR}={level}: this CPU lacks instructions that level needs"
                ));
            }
            if UNSAFE_LEVELS.contains(&level) {
                tracing::warn!(
                    level,
                    "ggml CPU level with AMX kernels pinned; they crashed on some Xeons"
                );
            }
            (level, path)
        }
        None => {
            let mut best: Option<(i32, &str, &Path)> = None;
            for &(level, path) in &levels {
                if UNSAFE_LEVELS.contains(&level) {
                    continue;
                }
                let s = score(path)?;
                if s > 0 && best.is_none_or(|(b, _, _)| s > b) {
                    best = Some((s, level, path));
                }
            }
            let Some((_, level, path)) = best else {
                return Err(format!(
                    "none of ggml's CPU levels in {} runs on this CPU (there: {})",
                    dir.display(),
                    names(&levels)
                ));
            };
            (level, path)
        }
    };
    register(cpu_path)?;
    let mut others = Vec::new();
    for (name, path) in &modules {
        match register(path) {
            Ok(()) => others.push(name.clone()),
            // A GPU backend without its driver (libcuda) is not an error on a CPU machine.
            Err(e) => tracing::warn!(backend = %name, "ggml backend not loaded: {e}"),
        }
    }
    tracing::debug!(cpu_level, ?others, dir = %dir.display(), "ggml backends loaded");
    Ok(Modules {
        dir,
        cpu_level: cpu_level.to_string(),
        others,
    })
}

fn names(levels: &[(&str, &Path)]) -> String {
    levels
        .iter()
        .map(|(l, _)| *l)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The library file of ggml's registered backend `name` (`CPU`, `RPC`, ...), if one is.
fn registered_library(name: &str) -> Option<PathBuf> {
    let name = CString::new(name).ok()?;
    // SAFETY: registries live for the process; `dladdr` only reads the loader's tables.
    unsafe {
        let registry = llama_cpp_sys_2::ggml_backend_reg_by_name(name.as_ptr());
        if registry.is_null() {
            return None;
        }
        let mut info: libc::Dl_info = std::mem::zeroed();
        if libc::dladdr(registry as *const std::ffi::c_void, &mut info) == 0
            || info.dli_fname.is_null()
        {
            return None;
        }
        let file = std::ffi::CStr::from_ptr(info.dli_fname);
        Some(PathBuf::from(file.to_string_lossy().into_owned()))
    }
}

/// A CPU level's own verdict on this machine: 0 when it cannot run here, higher for a better
/// match (ggml's `ggml_backend_score`).
fn score(path: &Path) -> std::result::Result<i32, String> {
    // SAFETY: ggml's backend libraries have no side effects on load beyond static data, and
    // `ggml_backend_score` takes nothing and returns an int.
    unsafe {
        let library = libloading::Library::new(path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        let score: libloading::Symbol<unsafe extern "C" fn() -> i32> = library
            .get(b"ggml_backend_score\0")
            .map_err(|e| format!("{} is not a ggml CPU level: {e}", path.display()))?;
        Ok(score())
    }
}

/// Load the library at `path` and register its backend with ggml.
fn register(path: &Path) -> std::result::Result<(), String> {
    let c_path = CString::new(path.to_string_lossy().as_bytes())
        .map_err(|_| format!("{} contains a NUL byte", path.display()))?;
    // SAFETY: ggml keeps the library loaded and registered for the process.
    let registry = unsafe { llama_cpp_sys_2::ggml_backend_load(c_path.as_ptr()) };
    if registry.is_null() {
        return Err(format!(
            "ggml could not load {} (its log says why)",
            path.display()
        ));
    }
    Ok(())
}
