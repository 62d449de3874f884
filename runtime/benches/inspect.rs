//! Cost of format detection and routing (`minerva inspect`): time per call and bytes read per
//! call, for the SmolLM2 GGUF and its MLX twin (run `scripts/setup` first). Detection reads
//! headers only, so bytes read must stay far below the weights' size.
//!
//! `cargo bench -p minerva-runtime --bench inspect`

use std::path::{Path, PathBuf};
use std::time::Instant;

use minerva_runtime::format::inspect;
use minerva_runtime::router::{EngineChoice, Router};

/// Bytes this process has read so far (Linux; 0 elsewhere).
fn bytes_read() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .ok()
        .and_then(|io| {
            io.lines().find_map(|l| {
                l.strip_prefix("rchar: ")
                    .and_then(|v| v.trim().parse().ok())
            })
        })
        .unwrap_or(0)
}

fn measure(path: &Path, router: &Router) {
    const CALLS: usize = 2000;
    let mut times = Vec::with_capacity(CALLS);
    let before = bytes_read();
    let mut weight_bytes = 0;
    for _ in 0..CALLS {
        let start = Instant::now();
        let info = inspect(path).expect("inspect");
        let _engine = router.engine_name(&info, &EngineChoice::Auto);
        times.push(start.elapsed().as_secs_f64() * 1e6);
        weight_bytes = info.weight_bytes;
    }
    let per_call = (bytes_read() - before) / CALLS as u64;
    times.sort_by(f64::total_cmp);
    println!(
        "{:<48} median {:>8.1} us (p10 {:.1}, p90 {:.1}); {:>7} bytes read per call of {} weight bytes ({:.4}%)",
        path.file_name().unwrap().to_string_lossy(),
        times[CALLS / 2],
        times[CALLS / 10],
        times[CALLS * 9 / 10],
        per_call,
        weight_bytes,
        per_call as f64 / weight_bytes.max(1) as f64 * 100.0
    );
}

fn main() {
    let models = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models");
    let router = Router::default();
    for name in [
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "SmolLM2-135M-Instruct-mlx",
    ] {
        let path = models.join(name);
        if path.exists() {
            measure(&path, &router);
        } else {
            eprintln!("{} is missing: run scripts/setup first", path.display());
        }
    }
}
