//! llama.cpp is built as shared libraries (ggml's CPU levels and GPU backends are modules loaded
//! at run time, which needs a shared ggml). llama-cpp-sys-2 leaves them in its build folder and
//! links only their unversioned names into target/<profile>/; copy the files the loader looks
//! for (`libllama.so.0`, ...) beside the binaries, which find them through `$ORIGIN` in their
//! run path (scripts/setup-mlx).

use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_LLAMA_BACKENDS_DIR");
    let Some(backends) = std::env::var_os("DEP_LLAMA_BACKENDS_DIR") else {
        return;
    };
    let lib_dir = Path::new(&backends).with_file_name("lib");
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    // OUT_DIR is target/<profile>/build/<crate>-<hash>/out.
    let Some(profile_dir) = out_dir.ancestors().nth(3) else {
        return;
    };
    let Ok(entries) = std::fs::read_dir(&lib_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        // The sonames: lib<name>.so.<major>, symbolic links to the versioned files.
        let is_soname = name.starts_with("lib")
            && name
                .split_once(".so.")
                .is_some_and(|(_, version)| !version.contains('.'));
        if !is_soname {
            continue;
        }
        // Also where llama-cpp-sys-2 links the unversioned names, so that none dangles (its build
        // script fails on a dangling one when it runs again).
        for dir in ["", "deps", "examples"].map(|d| profile_dir.join(d)) {
            if !dir.is_dir() {
                continue;
            }
            let target = dir.join(&name);
            let _ = std::fs::remove_file(&target);
            if let Err(e) = std::fs::copy(entry.path(), &target) {
                println!("cargo:warning=cannot copy {name} to {}: {e}", dir.display());
            }
        }
        println!("cargo:rerun-if-changed={}", entry.path().display());
    }
}
