//! `minerva pull`: fetch a model from the Hugging Face hub into the Hugging Face cache, with
//! progress bars (per file and in total: bytes, rate, ETA).

use std::collections::HashMap;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use clap::Args;
use indicatif::{HumanBytes, MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use minerva_runtime::{pull, PullProgress, Result};

/// Arguments of `minerva pull`.
#[derive(Args)]
pub struct PullArgs {
    /// `org/name` (a GGUF repo's default quantization, or an MLX / safetensors model directory)
    /// or `org/name:QUANT` (one quantization of a GGUF repo, e.g. `:Q4_K_M`).
    reference: String,
    /// Branch, tag or commit (default `main`).
    #[arg(long)]
    revision: Option<String>,
}

/// Run the command: the model's local path on stdout, progress on stderr.
pub async fn run(args: PullArgs) -> Result<ExitCode> {
    let started = Instant::now();
    let bars = Arc::new(Bars::new());
    let pulled = pull(&args.reference, args.revision.as_deref(), bars.clone()).await;
    bars.clear();
    let pulled = pulled?;
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "{}: {} file(s) fetched ({}, {}/s), {} already cached",
        args.reference,
        pulled.downloaded.len(),
        HumanBytes(pulled.bytes),
        HumanBytes((pulled.bytes as f64 / seconds.max(1e-3)) as u64),
        pulled.cached.len()
    );
    println!("{}", pulled.path.display());
    Ok(ExitCode::SUCCESS)
}

/// Progress bars on a terminal; one line per file otherwise.
pub struct Bars {
    multi: MultiProgress,
    total: ProgressBar,
    files: Mutex<HashMap<String, ProgressBar>>,
    terminal: bool,
}

impl Bars {
    /// Bars on stderr.
    pub fn new() -> Self {
        let terminal = std::io::stderr().is_terminal();
        let multi = MultiProgress::with_draw_target(if terminal {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        });
        let total = multi.add(ProgressBar::new(0).with_style(style(
            "{prefix:>12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
        )));
        total.set_prefix("total");
        Bars {
            multi,
            total,
            files: Mutex::new(HashMap::new()),
            terminal,
        }
    }

    /// Remove the bars.
    pub fn clear(&self) {
        self.total.finish_and_clear();
        let _ = self.multi.clear();
    }
}

impl Default for Bars {
    fn default() -> Self {
        Self::new()
    }
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

impl PullProgress for Bars {
    fn planned(&self, files: &[(String, u64)]) {
        self.total.set_length(files.iter().map(|(_, s)| s).sum());
        self.total.reset_eta();
    }

    fn file_started(&self, file: &str, size: u64) {
        if !self.terminal {
            eprintln!("downloading {file} ({})", HumanBytes(size));
        }
        let bar = self.multi.insert_before(
            &self.total,
            ProgressBar::new(size).with_style(style(
                "{msg:>12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
            )),
        );
        bar.set_message(short_name(file));
        let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        files.insert(file.to_string(), bar);
    }

    fn advanced(&self, file: &str, bytes: u64) {
        self.total.inc(bytes);
        let files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(bar) = files.get(file) {
            bar.inc(bytes);
        }
    }

    fn file_finished(&self, file: &str) {
        if !self.terminal {
            eprintln!("downloaded {file}, checksum ok");
        }
        let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(bar) = files.remove(file) {
            bar.finish_and_clear();
            let _ = self.multi.println(format!("{file} done"));
        }
    }
}

/// The file name without folders, cut to fit the bar's label.
fn short_name(file: &str) -> String {
    let name = file.rsplit('/').next().unwrap_or(file);
    if name.chars().count() > 28 {
        let tail: String = name
            .chars()
            .rev()
            .take(27)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        format!("…{tail}")
    } else {
        name.to_string()
    }
}
