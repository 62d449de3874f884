//! Linux: put OpenBLAS ahead of the reference BLAS that the prebuilt MLX wheel bundles. MLX
//! calls `cblas_*` through the dynamic linker, so a BLAS the binary itself needs is found first.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo::rustc-check-cfg=cfg(openblas)");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("linux") {
        return;
    }
    let found = [
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
        "/usr/lib64",
        "/usr/lib",
    ]
    .iter()
    .any(|dir| std::path::Path::new(dir).join("libopenblas.so").exists());
    if found {
        // `blas.rs` calls into it (thread count), which also keeps it a needed library.
        println!("cargo:rustc-link-lib=dylib=openblas");
        println!("cargo:rustc-cfg=openblas");
    } else {
        println!(
            "cargo:warning=libopenblas.so not found: MLX keeps its bundled reference BLAS \
             (float matrix products several times slower); scripts/setup installs libopenblas-dev"
        );
    }
}
