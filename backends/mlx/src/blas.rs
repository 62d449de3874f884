//! The BLAS behind MLX's float matrix products on the CPU. On Linux the build links OpenBLAS
//! when present (see `build.rs`), which then serves MLX's `cblas_*` calls instead of the
//! reference BLAS bundled with the prebuilt MLX; this module sets its thread count. Elsewhere
//! (macOS: Accelerate) there is nothing to do.

/// Name of the BLAS in use, for logs.
pub fn name() -> &'static str {
    if cfg!(openblas) {
        "OpenBLAS"
    } else if cfg!(target_os = "macos") {
        "Accelerate"
    } else {
        "reference BLAS (bundled with MLX)"
    }
}

/// Use `threads` threads for BLAS calls.
pub fn set_threads(threads: usize) {
    #[cfg(openblas)]
    {
        extern "C" {
            fn openblas_set_num_threads(threads: std::os::raw::c_int);
        }
        let threads = std::os::raw::c_int::try_from(threads.max(1)).unwrap_or(1);
        // SAFETY: plain setter of OpenBLAS's global thread count.
        unsafe { openblas_set_num_threads(threads) };
    }
    #[cfg(not(openblas))]
    let _ = threads;
}
